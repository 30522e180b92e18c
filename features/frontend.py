"""Log-mel front end with PANNs' settings (the STFT and mel modules of features.melbank) and padding-exact batching.

The STFT runs with ``center=False`` and each clip is reflect-padded on its own valid length, so a clip in a
zero-padded batch gets exactly the spectrogram frames it gets alone (torchlibrosa's ``center=True`` would reflect
the batch padding into the last frames). For a batch without ``lengths`` this is the same computation as
torchlibrosa's ``center=True``, so official PANNs outputs are reproduced.

The extractor modules keep PANNs' attribute names (``spectrogram_extractor``, ``logmel_extractor``,
``spec_augmenter``) so models holding them at top level load official checkpoints unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchlibrosa.augmentation import SpecAugmentation

from features.melbank import LogmelFilterBank, Spectrogram


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel settings (PANNs naming). Defaults are PANNs' 32 kHz settings."""

    sample_rate: int = 32000
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.window_size <= 0 or self.hop_size <= 0 or self.mel_bins <= 0:
            raise ValueError(f"Invalid MelConfig {asdict(self)}: sizes must be positive")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"Invalid MelConfig {asdict(self)}: need 0 <= fmin < fmax <= sample_rate / 2")


# PANNs' published settings per sample rate (the 16 kHz ones are those of Cnn14_16k).
PANNS_MEL_PRESETS: dict[int, dict[str, float]] = {
    32000: dict(window_size=1024, hop_size=320, mel_bins=64, fmin=50.0, fmax=14000.0),
    16000: dict(window_size=512, hop_size=160, mel_bins=64, fmin=50.0, fmax=8000.0),
    48000: dict(window_size=1024, hop_size=480, mel_bins=64, fmin=50.0, fmax=14000.0),  # LAION-CLAP's PANNs
}


def panns_mel_config(sample_rate: int = 32000, **overrides: float) -> MelConfig:
    """PANNs' mel settings for ``sample_rate`` (32000 or 16000), with any field overridden."""
    if sample_rate not in PANNS_MEL_PRESETS:
        raise ValueError(f"No PANNs mel preset for sample_rate={sample_rate}; "
                         f"valid: {sorted(PANNS_MEL_PRESETS)} (or give every setting)")
    settings = {**PANNS_MEL_PRESETS[sample_rate], **{k: v for k, v in overrides.items() if v is not None}}
    return MelConfig(sample_rate=sample_rate, **settings)


def build_extractors(cfg: MelConfig) -> tuple[Spectrogram, LogmelFilterBank]:
    """Frozen STFT and mel filter bank (state-dict compatible with PANNs'), always built on the CPU, even inside
    ``torch.device("meta")``: their fixed weights are computed, not loaded."""
    with torch.device("cpu"):
        spectrogram = Spectrogram(n_fft=cfg.window_size, hop_length=cfg.hop_size)
        logmel = LogmelFilterBank(cfg.sample_rate, n_fft=cfg.window_size, n_mels=cfg.mel_bins, fmin=cfg.fmin,
                                  fmax=cfg.fmax)
    return spectrogram, logmel


def build_spec_augment(time_drop_width: int = 64, time_stripes_num: int = 2, freq_drop_width: int = 8,
                       freq_stripes_num: int = 2) -> SpecAugmentation:
    """torchlibrosa SpecAugment with PANNs' defaults; it acts only in training mode."""
    return SpecAugmentation(time_drop_width=time_drop_width, time_stripes_num=time_stripes_num,
                            freq_drop_width=freq_drop_width, freq_stripes_num=freq_stripes_num)


def stft_frame_lengths(lengths: Tensor, hop_size: int) -> Tensor:
    """Number of centred STFT frames for clips of ``lengths`` samples: ``L // hop + 1``."""
    return torch.div(lengths, hop_size, rounding_mode="floor") + 1


def pad_waveforms(waves: Sequence[np.ndarray | Tensor]) -> tuple[Tensor, Tensor]:
    """Mono clips [N_i] -> one zero-padded float32 batch ``waveform`` [B, N_max] and ``lengths`` [B] (long), what
    the encoders take (they ignore the padding)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    waveform = pad_sequence([torch.as_tensor(w, dtype=torch.float32) for w in waves], batch_first=True)  # (B, N)
    return waveform, lengths


def centred_pad(waveform: Tensor, lengths: Tensor | None, window_size: int) -> Tensor:
    """Reflect-pad each clip by ``window_size // 2`` on its own valid length, then zero-pad to a common length.

    waveform: (B, N); lengths: (B,) valid samples, each > window_size // 2 (or None: all N valid).
    Returns (B, N + 2 * (window_size // 2)).
    """
    pad = window_size // 2
    if lengths is None:
        return F.pad(waveform[:, None, :], (pad, pad), mode="reflect")[:, 0]
    out = waveform.new_zeros(waveform.shape[0], waveform.shape[1] + 2 * pad)
    for b, n in enumerate(lengths.tolist()):
        clip = waveform[b:b + 1, None, :n]  # (1, 1, n)
        out[b, :n + 2 * pad] = F.pad(clip, (pad, pad), mode="reflect")[0, 0]
    return out


def waveform_to_logmel(spectrogram: Spectrogram, logmel: LogmelFilterBank, waveform: Tensor,
                       lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Log-mel power in dB, (B, 1, T, M), and valid frames per clip (B,) (None when ``lengths`` is None).

    waveform: (B, N) float; lengths: (B,) valid samples per clip, each > window_size // 2.
    """
    if waveform.dim() != 2:
        raise ValueError(f"Invalid waveform. (expected (B, N), found shape {tuple(waveform.shape)})")
    window_size = spectrogram.stft.n_fft
    with torch.autocast(waveform.device.type, enabled=False):  # the spectrum in float32 under mixed precision too
        x = centred_pad(waveform.float(), lengths, window_size)  # (B, N + window)
        x = logmel(spectrogram(x))  # (B, 1, T, M)
    if lengths is None:
        return x, None
    return x, stft_frame_lengths(lengths, spectrogram.stft.conv_real.stride[0])


class LogMelFrontend(nn.Module):
    """Waveform (B, N) -> log-mel (B, 1, T, M) [dB], with SpecAugment in training mode if enabled.

    Standalone front end (for anyone who wants the features alone); PANNs CNNs hold the same
    extractor modules at their top level instead, for checkpoint compatibility.
    """

    def __init__(self, cfg: MelConfig, spec_augment: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.spectrogram_extractor, self.logmel_extractor = build_extractors(cfg)
        self.spec_augmenter = build_spec_augment() if spec_augment else None

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x, frame_lengths = waveform_to_logmel(self.spectrogram_extractor, self.logmel_extractor, waveform, lengths)
        if self.training and self.spec_augmenter is not None:
            x = self.spec_augmenter(x)
        return x, frame_lengths
