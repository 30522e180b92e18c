"""Audio Spectrogram Transformer (``transformers``' ``ASTModel``) as an audio encoder, with AST's own front end.

Input, as ``transformers``' ``ASTFeatureExtractor`` makes it: the Kaldi fbank of the float waveform (no 2**15
scale, Hanning window, 25 ms / 10 ms frames, ``num_mel_bins`` bins from 20 Hz to Nyquist; :mod:`features.kaldi`,
computed in float64 like the extractor), zero-padded or cut to ``max_length`` frames, then ``(x - mean) / (2 * std)``
with AST's AudioSet statistics (or those of the folder's ``preprocessor_config.json``). A clip of up to
``max_length`` frames (10.24 s for the published models) gets exactly the extractor's input and so the
``transformers`` model's hidden states and logits.

Long audio: the fbank of the whole clip is cut into consecutive windows of ``max_length`` frames (the first is the
extractor's input), each padded like the extractor pads and run through the model. A clip's frames are the patch
tokens averaged over frequency, window after window, those starting on one of its own fbank frames; its ``clip``
embedding (AST's pooled output, the mean of the CLS and distillation tokens) and ``logits`` (folders with an
audio-classification head) are the means over windows weighted by their valid frames. A clip in a padded batch gets
what it gets alone. Clips shorter than one fbank frame (400 samples) are zero-padded to one.

Patch grid: ``frequency_stride`` / ``time_stride`` (AST's fstride / tstride: 10 in the published models, 16 in
SJTU's retrieval system) and ``max_length`` may differ from a pretrained folder's; the position embeddings are then
adapted as AST's code adapts them (per axis, time first: centre crop to a smaller grid, bilinear to a larger one).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.model_folder import refuse_custom_code
from common.tensor import lengths_to_mask
from features.encoders.panns import check_input
from features.frontend import build_spec_augment
from features.kaldi import FbankConfig, fbank, num_frames

AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet fbank statistics of AST's feature extractor
AST_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                     "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                     "patch_size", "qkv_bias", "frequency_stride", "time_stride", "max_length", "num_mel_bins")
GRID_FIELDS = ("frequency_stride", "time_stride", "max_length")  # may be changed for pretrained weights
PREPROCESSOR_FILE = "preprocessor_config.json"


def ast_fbank_config(sample_rate: int, num_mel_bins: int) -> FbankConfig:
    """``ASTFeatureExtractor``'s fbank (``torchaudio.compliance.kaldi.fbank`` with a Hanning window, else defaults)."""
    return FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins, window_type="hanning")


def patch_grid(config: Any) -> tuple[int, int]:
    """(frequency patches, time patches) of an ``ASTConfig``."""
    return ((config.num_mel_bins - config.patch_size) // config.frequency_stride + 1,
            (config.max_length - config.patch_size) // config.time_stride + 1)


def resize_position_embeddings(pos: Tensor, old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """AST's adaptation of position embeddings to another patch grid: (1, 2 + F*T, H) -> (1, 2 + F'*T', H).

    The two leading (CLS, distillation) rows are kept; the grid is centre-cropped or bilinearly interpolated, time
    axis first, then frequency, as AST's code does for strides or input lengths other than the pretrained ones.
    """
    (f, t), (nf, nt), h = old, new, pos.shape[-1]
    grid = pos[:, 2:].transpose(1, 2).reshape(1, h, f, t)  # (1, H, F, T)
    if nt < t:
        grid = grid[..., t // 2 - nt // 2: t // 2 - nt // 2 + nt]
    elif nt > t:
        grid = F.interpolate(grid, size=(f, nt), mode="bilinear")
    if nf < f:
        grid = grid[:, :, f // 2 - nf // 2: f // 2 - nf // 2 + nf]
    elif nf > f:
        grid = F.interpolate(grid, size=(nf, nt), mode="bilinear")
    return torch.cat([pos[:, :2], grid.reshape(1, h, nf * nt).transpose(1, 2)], dim=1)


def read_normalisation(folder: str) -> tuple[float, float] | None:
    """(mean, std) from an ``ASTFeatureExtractor``'s ``preprocessor_config.json`` in ``folder``, if there is one."""
    path = Path(folder) / PREPROCESSOR_FILE
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read {path}: {err}") from err
    if cfg.get("feature_extractor_type", "ASTFeatureExtractor") != "ASTFeatureExtractor":
        raise ValueError(f"{path} is for {cfg['feature_extractor_type']!r}, expected 'ASTFeatureExtractor'")
    if not cfg.get("do_normalize", True):
        return 0.0, 0.5  # (x - 0) / (2 * 0.5): the fbank as it is
    return float(cfg.get("mean", AST_MEAN)), float(cfg.get("std", AST_STD))


def load_pretrained(folder: str, grid: dict[str, Any]) -> tuple[nn.Module, nn.Module | None]:
    """(``ASTModel``, classification head or None) from a ``save_pretrained`` folder (never downloaded), on the
    patch grid ``grid`` (``GRID_FIELDS``; missing ones as saved)."""
    from transformers import ASTConfig, ASTForAudioClassification, ASTModel

    refuse_custom_code(folder, f"AST model folder {folder}")
    try:
        config = ASTConfig.from_pretrained(folder, local_files_only=True)
        with_head = "ASTForAudioClassification" in (config.architectures or []) and config.num_labels > 0
        loaded = (ASTForAudioClassification if with_head else ASTModel).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot load AST from local folder {folder!r}: {err}") from err
    if any(getattr(config, k) != v for k, v in grid.items()):
        state = loaded.state_dict()
        key = next(k for k in state if k.endswith("embeddings.position_embeddings"))
        old = patch_grid(config)
        for k, v in grid.items():
            setattr(config, k, v)
        state[key] = resize_position_embeddings(state[key], old, patch_grid(config))
        loaded = type(loaded)(config)
        loaded.load_state_dict(state, strict=True)
    if with_head:
        return loaded.audio_spectrogram_transformer, loaded.classifier
    return loaded, None


class AstEncoder(nn.Module):
    """AST encoder: waveform (B, N) -> frames (B, T, H), clip (B, H) [, logits (B, num_labels)].

    Args:
        pretrained: a local folder saved by ``ASTModel`` / ``ASTForAudioClassification.save_pretrained`` (a
            published AST folder); else random init.
        sample_rate: of the waveform (published models: 16000).
        mean, std: fbank normalisation; default: the folder's ``preprocessor_config.json``, else AudioSet's.
        num_labels: size of a random classification head (0: none); a pretrained folder brings its own.
        spec_augment: SpecAugment on the fbank (before normalisation, as AST trains) in training mode.
        **config: ``ASTConfig`` fields (``AST_CONFIG_FIELDS``) for random init; with ``pretrained``, only the patch
            grid (``GRID_FIELDS``).
    """

    def __init__(self, pretrained: str | None = None, sample_rate: int = 16000, mean: float | None = None,
                 std: float | None = None, num_labels: int = 0, spec_augment: bool = False, **config: Any) -> None:
        super().__init__()
        from transformers import ASTConfig, ASTForAudioClassification, ASTModel  # slow import: only when built

        stats = None
        if pretrained is not None:
            if set(config) - set(GRID_FIELDS) or num_labels:
                raise ValueError(f"With pretrained={pretrained!r} only the patch grid {GRID_FIELDS} can be set; "
                                 f"found {sorted(set(config) - set(GRID_FIELDS)) or ['num_labels']}")
            self.model, self.classifier = load_pretrained(pretrained, config)
            stats = read_normalisation(pretrained)
        else:
            unknown = set(config) - set(AST_CONFIG_FIELDS)
            if unknown:
                raise ValueError(f"Unknown ASTConfig fields {sorted(unknown)}; valid: {AST_CONFIG_FIELDS}")
            if num_labels < 0:
                raise ValueError(f"num_labels must be >= 0, got {num_labels}")
            if num_labels:
                full = ASTForAudioClassification(ASTConfig(num_labels=num_labels, **config))
                self.model, self.classifier = full.audio_spectrogram_transformer, full.classifier
            else:
                self.model, self.classifier = ASTModel(ASTConfig(**config)), None
        self.mean = float(mean if mean is not None else stats[0] if stats else AST_MEAN)
        self.std = float(std if std is not None else stats[1] if stats else AST_STD)
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        cfg = self.model.config
        self.fbank_config = ast_fbank_config(sample_rate, cfg.num_mel_bins)
        self.max_length = cfg.max_length
        self.freq_patches, self.time_patches = patch_grid(cfg)
        self.time_stride = cfg.time_stride
        self.spec_augmenter = build_spec_augment() if spec_augment else None

        self.sample_rate = sample_rate
        self.frame_dim = self.clip_dim = cfg.hidden_size
        self.frame_hop = cfg.time_stride * self.fbank_config.frame_shift  # input samples per output frame

    def rebuild_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` with a ``pretrained`` folder replaced by what it held (config, head size, normalisation), so a
        saved checkpoint is self-contained."""
        if spec.get("pretrained") is None:
            return dict(spec)
        config = {k: getattr(self.model.config, k) for k in AST_CONFIG_FIELDS}
        head = {"num_labels": self.classifier.dense.out_features} if self.classifier is not None else {}
        kept = {k: v for k, v in spec.items() if k != "pretrained" and k not in GRID_FIELDS}
        return {**kept, **config, **head, "mean": self.mean, "std": self.std}

    def _count(self, fbank_frames: Tensor) -> Tensor:
        """Time patches that start on a valid fbank frame of one window, (B,) -> (B,)."""
        n = torch.div(fbank_frames + self.time_stride - 1, self.time_stride, rounding_mode="floor")
        return n.clamp(max=self.time_patches)

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames ``forward`` returns for clips of ``lengths`` samples, (B,) -> (B,) long."""
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        frames = num_frames(lengths.clamp(min=self.fbank_config.frame_length), self.fbank_config)
        full, rest = torch.div(frames, self.max_length, rounding_mode="floor"), frames % self.max_length
        return full * self.time_patches + self._count(rest)  # every full window gives time_patches frames

    def fbank(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Unnormalised fbank of the whole clips, (B, N), (B,) -> (B, F, num_mel_bins) float32 and frames (B,).

        Computed in float64 (the reference extractor's precision); padded frames are 0."""
        w = self.fbank_config.frame_length
        if waveform.shape[1] < w:  # shorter than one fbank frame: zero-pad to one
            waveform = F.pad(waveform, (0, w - waveform.shape[1]))
        if lengths is not None:
            lengths = lengths.clamp(min=w)
        precise = torch.float32 if waveform.device.type == "mps" else torch.float64  # MPS has no float64
        x, counts = fbank(waveform.to(precise), lengths, self.fbank_config)
        return x.float(), counts

    def input_values(self, fbank_window: Tensor) -> Tensor:
        """One window of fbank frames (B, <= max_length, M), 0 past each clip's frames -> the model's input
        (B, max_length, M): padded with zeros to ``max_length``, SpecAugment in training, then normalised."""
        x = F.pad(fbank_window, (0, 0, 0, self.max_length - fbank_window.shape[1]))  # (B, max_length, M)
        if self.training and self.spec_augmenter is not None:
            x = self.spec_augmenter(x[:, None])[:, 0]
        return (x - self.mean) / (2 * self.std)

    def _window(self, x: Tensor) -> dict[str, Tensor]:
        """Model input (B, max_length, M) -> patch frames (B, T', H), pooled output (B, H) [, logits]."""
        out = self.model(input_values=x)
        tokens = out.last_hidden_state[:, 2:]  # drop CLS and distillation tokens: (B, F' * T', H)
        b, _, h = tokens.shape
        frames = tokens.reshape(b, self.freq_patches, self.time_patches, h).mean(dim=1)  # (B, T', H)
        result = {"frames": frames, "clip": out.pooler_output}
        if self.classifier is not None:
            result["logits"] = self.classifier(out.pooler_output)
        return result

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """waveform (B, N), lengths (B,) or None -> ``frames`` (B, T, H), ``frame_lengths`` (B,), ``clip`` (B, H),
        and ``logits`` (B, num_labels) with a classification head."""
        lengths = check_input(waveform, lengths)
        x, fbank_frames = self.fbank(waveform, lengths)  # (B, F, M), (B,)
        b = x.shape[0]
        counts = self.num_frames(lengths if lengths is not None else  # on the model's device: no sync with the host
                                 torch.full((b,), waveform.shape[1], device=x.device)).to(x.device)
        pieces: dict[str, list[Tensor]] = {}
        weights = []
        for start in range(0, int(fbank_frames.max()), self.max_length):
            valid = (fbank_frames - start).clamp(0, self.max_length)  # this window's fbank frames per clip
            rows = valid.nonzero()[:, 0]  # clips with audio left: only those are run
            out = self._window(self.input_values(x[rows, start:start + self.max_length]))
            n = self._count(valid[rows])
            out["frames"] = out["frames"] * lengths_to_mask(n, self.time_patches)[..., None].to(x.dtype)
            for key, value in out.items():  # scatter back to the whole batch, zeros for the clips not run
                pieces.setdefault(key, []).append(value.new_zeros(b, *value.shape[1:]).index_copy(0, rows, value))
            weights.append(self._count(valid).to(x.dtype))
        w = torch.stack(weights)[..., None]  # (W, B, 1)
        result = {"frames": torch.cat(pieces.pop("frames"), dim=1)[:, :int(counts.max())], "frame_lengths": counts}
        for key, values in pieces.items():  # clip, logits: means over windows weighted by valid frames
            result[key] = (torch.stack(values) * w).sum(dim=0) / w.sum(dim=0)
        return result
