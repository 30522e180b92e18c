"""BEATs (Chen et al., 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers") as an audio encoder.

Front end as BEATs': 128-bin Kaldi fbank (:mod:`features.kaldi`) at 16 kHz of the waveform times 2**15 (25 ms /
10 ms frames), normalised as ``(x - 15.41663) / (2 * 6.55582)``; then 16x16 patches (8 frequency x T time patches
of 160 ms), layer norm, a projection to the encoder width, and the transformer of
:mod:`features.encoders.beats_layers`. Frames are the tokens averaged over the frequency patches, (B, T, 768) for
the published models; the clip embedding is the mean of the valid frames; fine-tuned checkpoints
(``finetuned_model``) also give ``logits`` (B, 527): the AudioSet head on the mean token, which is the mean of the
official per-token logits (the head is linear); their sigmoid is the official model's output.

Every published checkpoint (pre-trained: iter1, iter2, iter3, iter3+ on AS-20K or AS-2M; and those fine-tuned on
AudioSet) is ``{"cfg": dict, "model": state_dict}`` and loads unchanged: :func:`official_spec_and_state` reads it,
:meth:`BeatsEncoder.from_official` builds the encoder (strictly, errors naming the keys and shapes).

Padding: a clip's valid patches are those made only of its own fbank frames (Kaldi frames are computed one by one,
so they never see the batch padding); tokens of other patches are zeroed before the positional convolution and never
attended to, so a clip's frames in a padded batch equal its frames alone. The official ``forward_padding_mask``
pools the per-sample mask over about 160 samples per fbank frame, then over pairs of frames per flattened
(time, frequency) token, so a padded clip keeps (some frequency tokens of) the patch reaching into the padding,
which the clip alone does not have, and its other frames shift too; both agree on a batch without padding. Clips
shorter than one patch (0.175 s) are zero-padded to one.

Long audio: with ``chunk_seconds``, windows of a whole number of patches (10.0 s -> 62 patches, 9.92 s) that
overlap by the 240 samples a Kaldi frame reaches past its shift, so each window's fbank frames are exactly the
whole clip's; frames are concatenated (the same count as one pass), the clip embedding is their mean.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.tensor import lengths_to_mask, masked_mean
from features.encoders.beats_layers import BeatsConfig, TransformerEncoder, init_weights
from features.encoders.panns import check_input
from features.kaldi import FbankConfig, fbank

SAMPLE_RATE = 16000
# BEATs' fbank: torchaudio's kaldi.fbank defaults (Povey window, 20 Hz to Nyquist), 128 bins, of the waveform * 2**15.
# At 128 bins one low triangle (bin 3) holds no FFT bin: Kaldi refuses that, torchaudio (so BEATs) keeps it floored.
BEATS_FBANK = FbankConfig(sample_rate=SAMPLE_RATE, num_mel_bins=128, waveform_scale=2 ** 15)
FRAME_LENGTH, FRAME_SHIFT = BEATS_FBANK.frame_length, BEATS_FBANK.frame_shift  # 400, 160 samples: 25 ms / 10 ms
FBANK_MEAN, FBANK_STD = 15.41663, 6.55582  # BEATs' AudioSet fbank statistics
# The cfg of the published checkpoints (iter3 / iter3+, pre-trained); the fine-tuned ones add finetuned_model=True,
# predictor_dropout=0.0, predictor_class=527. For a random-init model of the published shape.
BEATS_PUBLISHED: dict[str, Any] = dict(
    input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu", layer_wise_gradient_decay_ratio=0.6,
    layer_norm_first=False, deep_norm=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    encoder_layerdrop=0.05, dropout_input=0.0, conv_pos=128, conv_pos_groups=16, relative_position_embedding=True,
    num_buckets=320, max_distance=800, gru_rel_pos=True, finetuned_model=False)


class BeatsEncoder(nn.Module):
    """BEATs: waveform (B, N) at 16 kHz -> frames (B, T, D), clip (B, D) [, logits (B, classes)].

    Args:
        chunk_seconds: if set, clips longer than this are encoded in windows of this length (rounded down to
            whole patches) and their frames concatenated.
        **cfg: official BEATs config fields (:class:`~features.encoders.beats_layers.BeatsConfig`); defaults are
            the official config class's; ``BEATS_PUBLISHED`` is the published models' cfg.
    """

    def __init__(self, chunk_seconds: float | None = None, **cfg: Any) -> None:
        super().__init__()
        self.cfg = c = BeatsConfig.from_dict(cfg)
        p = c.input_patch_size
        self.patch_embedding = nn.Conv2d(1, c.embed_dim, kernel_size=p, stride=p, bias=c.conv_bias)
        self.layer_norm = nn.LayerNorm(c.embed_dim)
        if c.embed_dim != c.encoder_embed_dim:
            self.post_extract_proj = nn.Linear(c.embed_dim, c.encoder_embed_dim)
        self.encoder = TransformerEncoder(c)
        if c.finetuned_model:
            self.predictor = nn.Linear(c.encoder_embed_dim, c.predictor_class)
        init_weights(self.encoder)

        self.sample_rate = SAMPLE_RATE
        self.frame_dim = self.clip_dim = c.encoder_embed_dim
        self.frame_hop = p * FRAME_SHIFT  # input samples per output frame (2560: 160 ms)
        self.min_samples = FRAME_LENGTH + (p - 1) * FRAME_SHIFT  # one patch of fbank frames (2800: 175 ms)
        self.chunk_samples = None
        if chunk_seconds is not None:
            if chunk_seconds <= 0:
                raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
            self.chunk_samples = max(1, int(chunk_seconds * SAMPLE_RATE) // self.frame_hop) * self.frame_hop
        self.window_overlap = FRAME_LENGTH - FRAME_SHIFT  # a window reads this far past its stride

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames ``forward`` returns for clips of ``lengths`` samples, (B,) -> (B,) long (windowing included)."""
        n = torch.as_tensor(lengths, dtype=torch.long).clamp(min=self.min_samples)
        fbank_frames = torch.div(n - FRAME_LENGTH, FRAME_SHIFT, rounding_mode="floor") + 1
        return torch.div(fbank_frames, self.cfg.input_patch_size, rounding_mode="floor")

    def _window(self, waveform: Tensor, counts: Tensor) -> Tensor:
        """One pass: waveform (B, n), valid patches per clip (B,) -> frames (B, T', D), zero past ``counts``."""
        x, _ = fbank(waveform.float(), None, BEATS_FBANK)  # (B, F, 128): every frame of the window
        x = (x - FBANK_MEAN) / (2 * FBANK_STD)
        x = self.patch_embedding(x[:, None].to(self.patch_embedding.weight.dtype))  # (B, C, T', F')
        b, _, t, f = x.shape
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # (B, T' * F', C), time-major
        if hasattr(self, "post_extract_proj"):
            x = self.post_extract_proj(x)
        x = F.dropout(x, self.cfg.dropout_input, self.training)
        padding = None
        if bool((counts < t).any()):  # a clip without any patch here still attends to one (output dropped)
            padding = ~lengths_to_mask(counts.clamp(min=1), t).repeat_interleave(f, dim=1)  # (B, T' * F')
        x = self.encoder(x, padding)
        frames = x.view(b, t, f, -1).mean(dim=2)  # (B, T', D): frequency patches merged
        return frames.masked_fill(~lengths_to_mask(counts, t)[..., None], 0.0)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """waveform (B, N) float at 16 kHz, lengths (B,) valid samples or None -> ``frames`` (B, T, D),
        ``frame_lengths`` (B,) long, ``clip`` (B, D), and ``logits`` (B, classes) for fine-tuned models."""
        lengths = check_input(waveform, lengths)
        b, n = waveform.shape
        if lengths is not None and bool((lengths < n).any()):
            waveform = waveform * lengths_to_mask(lengths, n).to(waveform.dtype)  # padding must be 0
        lengths = torch.full((b,), n, device=waveform.device) if lengths is None else lengths
        if n < self.min_samples:
            waveform = F.pad(waveform, (0, self.min_samples - n))
        counts = self.num_frames(lengths)
        if self.chunk_samples is None or waveform.shape[1] <= self.chunk_samples + self.window_overlap:
            frames = self._window(waveform, counts)
        else:
            pieces = []
            for start in range(0, waveform.shape[1], self.chunk_samples):
                part = (lengths - start).clamp(0, self.chunk_samples + self.window_overlap)
                if start > 0 and int(part.max()) < self.min_samples:
                    break  # no clip has another patch
                window = waveform[:, start:start + self.chunk_samples + self.window_overlap]
                # a clip's first window is padded to one patch; later ones count only their whole patches
                pieces.append(self._window(window, self.num_frames(part) if start == 0 else
                                           self.num_frames(part) * (part >= self.min_samples)))
            # every window but a clip's last is full, so each clip's valid frames stay contiguous
            frames = torch.cat(pieces, dim=1)
        frames = frames[:, :int(counts.max())]  # (B, T, D)
        out = {"frames": frames, "frame_lengths": counts,
               "clip": masked_mean(frames, lengths_to_mask(counts, frames.shape[1]), dim=1)}
        if hasattr(self, "predictor"):  # mean of per-token logits = head on the mean token (it is linear)
            out["logits"] = self.predictor(F.dropout(out["clip"], self.cfg.predictor_dropout, self.training))
        return out

    @classmethod
    def from_official(cls, checkpoint: Mapping[str, Any], source: str = "BEATs checkpoint",
                      chunk_seconds: float | None = None) -> "BeatsEncoder":
        """An official ``{"cfg": dict, "model": state_dict}`` checkpoint -> encoder in eval mode, loaded strictly
        (a missing, unexpected or mis-shaped key is a ValueError naming ``source``, the keys and shapes)."""
        from features.weights import chunked_spec, encoder_from_state  # here: features.weights imports the registry

        spec, state = official_spec_and_state(checkpoint, source)
        return encoder_from_state(chunked_spec(spec, chunk_seconds), state, source)


def official_spec_and_state(checkpoint: Any, source: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Recognise an official BEATs checkpoint -> (encoder spec ``{"name": "beats", **cfg}``, state dict)."""
    if not (isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("cfg"), Mapping)
            and isinstance(checkpoint.get("model"), Mapping)):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"{source}: not an official BEATs checkpoint (expected a dict with a 'cfg' dict and a "
                         f"'model' state dict, found {found})")
    try:
        BeatsConfig.from_dict(dict(checkpoint["cfg"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None
    return {"name": "beats", **checkpoint["cfg"]}, dict(checkpoint["model"])


__all__ = ["BEATS_FBANK", "BEATS_PUBLISHED", "BeatsEncoder", "official_spec_and_state"]
