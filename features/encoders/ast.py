"""Audio Spectrogram Transformer (``transformers.ASTModel``) as an audio encoder.

AST takes a fixed grid of ``max_length`` fbank frames x ``num_mel_bins``, so audio is cut into windows of that many
frames (10.24 s for the published model), each padded to the full grid like the Hugging Face feature extractor
does; a clip in a padded batch therefore sees exactly the input it sees alone. Frames are the patch tokens averaged
over frequency; the clip embedding is AST's pooled output (mean of the CLS and distillation tokens), averaged over
windows weighted by their valid frames.

Front-end gap: features are torchlibrosa log-mels converted to natural log and normalised with AST's AudioSet
statistics, close to but not bit-identical with Kaldi fbank; fine-tune (or accept a small shift) when loading
published AST weights.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.tensor import lengths_to_mask
from features.encoders.panns import check_input
from features.frontend import LogMelFrontend, MelConfig, stft_frame_lengths

AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet fbank statistics used by AST's feature extractor
DB_TO_NATURAL_LOG = math.log(10.0) / 10.0
AST_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                     "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                     "patch_size", "qkv_bias", "frequency_stride", "time_stride", "max_length", "num_mel_bins")


class AstEncoder(nn.Module):
    """AST encoder: waveform (B, N) -> frames (B, T, H), clip (B, H).

    Args:
        pretrained: a local folder saved by ``ASTModel.save_pretrained`` (never downloaded); else random init.
        sample_rate, window_size, hop_size, fmin, fmax: front-end settings (AST's 16 kHz, 25 ms / 10 ms).
        spec_augment: SpecAugment on the fbank in training mode.
        **config: ``ASTConfig`` fields for random init (``hidden_size``, ``num_hidden_layers``, ``max_length``,
            ``num_mel_bins``, ...).
    """

    def __init__(self, pretrained: str | None = None, sample_rate: int = 16000, window_size: int = 400,
                 hop_size: int = 160, fmin: float = 20.0, fmax: float | None = None, spec_augment: bool = False,
                 **config: object) -> None:
        super().__init__()
        from transformers import ASTConfig, ASTModel  # here, not at import: transformers takes seconds to import

        if pretrained is not None:
            if config:
                raise ValueError(f"AST config fields {sorted(config)} cannot be combined with pretrained={pretrained!r}")
            try:
                self.model = ASTModel.from_pretrained(pretrained, local_files_only=True)
            except (OSError, ValueError) as err:
                raise ValueError(f"Cannot load AST from local folder {pretrained!r}: {err}") from err
        else:
            unknown = set(config) - set(AST_CONFIG_FIELDS)
            if unknown:
                raise ValueError(f"Unknown ASTConfig fields {sorted(unknown)}")
            self.model = ASTModel(ASTConfig(**config))
        cfg = self.model.config
        self.max_length, self.mel_bins = cfg.max_length, cfg.num_mel_bins
        self.frontend = LogMelFrontend(MelConfig(sample_rate, window_size, hop_size, cfg.num_mel_bins, fmin,
                                                 fmax if fmax is not None else sample_rate / 2), spec_augment)
        self.freq_patches = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        self.time_patches = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
        self.time_stride = cfg.time_stride

        self.sample_rate = sample_rate
        self.frame_dim = self.clip_dim = cfg.hidden_size
        self.frame_hop = cfg.time_stride * hop_size  # input samples per output frame
        self.window_samples = cfg.max_length * hop_size  # audio per AST input grid
        self.min_samples = window_size  # reflect padding needs more than half a window

    def rebuild_spec(self, spec: dict[str, object]) -> dict[str, object]:
        """``spec`` with a ``pretrained`` folder replaced by its config, so a saved checkpoint is self-contained."""
        if spec.get("pretrained") is None:
            return dict(spec)
        config = {k: getattr(self.model.config, k) for k in AST_CONFIG_FIELDS}
        return {**{k: v for k, v in spec.items() if k != "pretrained"}, **config}

    def _count(self, fbank_frames: Tensor) -> Tensor:
        """Time patches that start on a valid fbank frame, (B,) -> (B,)."""
        n = torch.div(fbank_frames + self.time_stride - 1, self.time_stride, rounding_mode="floor")
        return n.clamp(max=self.time_patches)

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames ``forward`` returns for clips of ``lengths`` samples, (B,) -> (B,) long."""
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        total = torch.zeros_like(lengths)
        for start in range(0, max(int(lengths.max()), 1), self.window_samples):
            part = (lengths - start).clamp(0, self.window_samples)
            if start == 0:
                part = part.clamp(min=self.min_samples)
            fbank = stft_frame_lengths(part, self.frontend.cfg.hop_size).clamp(max=self.max_length)
            total += self._count(fbank) * (part > 0)
        return total

    def _window(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """One window (B, n <= window_samples) -> patch frames (B, T', H) and pooled output (B, H)."""
        if waveform.shape[1] < self.min_samples:
            waveform = F.pad(waveform, (0, self.min_samples - waveform.shape[1]))
        x, valid = self.frontend(waveform, lengths.clamp(min=self.min_samples))  # (B, 1, T, M) dB
        x = x[:, 0, :self.max_length] * DB_TO_NATURAL_LOG  # (B, T, M)
        x = x * lengths_to_mask(valid, x.shape[1])[..., None].to(x.dtype)  # padded fbank frames are 0, as in HF
        x = F.pad(x, (0, 0, 0, self.max_length - x.shape[1]))  # (B, max_length, M)
        out = self.model(input_values=(x - AST_MEAN) / (2 * AST_STD))
        tokens = out.last_hidden_state[:, 2:]  # drop CLS and distillation tokens: (B, F' * T', H)
        b, _, h = tokens.shape
        frames = tokens.reshape(b, self.freq_patches, self.time_patches, h).mean(dim=1)  # (B, T', H)
        return frames, out.pooler_output

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """waveform (B, N), lengths (B,) or None -> ``frames`` (B, T, H), ``frame_lengths`` (B,), ``clip`` (B, H)."""
        lengths = check_input(waveform, lengths)
        b, n = waveform.shape
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.long, device=waveform.device)
        waveform = waveform * lengths_to_mask(lengths, n).to(waveform.dtype)  # padding must be 0
        counts = self.num_frames(lengths.cpu()).to(waveform.device)
        frames, clips, weights = [], [], []
        for start in range(0, int(lengths.max()), self.window_samples):
            part = (lengths - start).clamp(0, self.window_samples)
            f, pooled = self._window(waveform[:, start:start + self.window_samples], part)
            nf = self.num_frames(part.cpu()).to(waveform.device) * (part > 0)  # valid frames in this window
            frames.append(f * lengths_to_mask(nf, f.shape[1])[..., None].to(f.dtype))
            clips.append(pooled)
            weights.append(nf.to(pooled.dtype))
        w = torch.stack(weights)[..., None]  # (W, B, 1)
        clip = (torch.stack(clips) * w).sum(dim=0) / w.sum(dim=0)  # (B, H)
        frames_cat = torch.cat(frames, dim=1)[:, :int(counts.max())]  # (B, T, H)
        return {"frames": frames_cat, "frame_lengths": counts, "clip": clip}
