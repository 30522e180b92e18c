"""Kaldi-compatible log mel filterbank (``compute-fbank-feats``, ``torchaudio.compliance.kaldi.fbank``) in torch,
batched over zero-padded clips.

Kaldi's recipe per frame of ``frame_length_ms`` every ``frame_shift_ms`` (``snip_edges=True``: only frames that fit
wholly inside the clip, ``1 + (L - W) // S`` of them, none for a clip shorter than one frame ``W``): optional
Gaussian dither, DC offset removal, pre-emphasis ``x[i] - p * x[i - 1]`` (``x[0] - p * x[0]`` first), the window
(``povey``, ``hanning``, ``hamming``, ``rectangular``), zero padding to the FFT size (the next power of two if
``round_to_power_of_two``), the power spectrum, triangular mel banks on Kaldi's mel scale ``1127 ln(1 + f / 700)``
between ``low_freq`` and ``high_freq`` (<= 0: that far below Nyquist), and the natural log floored at the float32
epsilon. Fixed as in the usual front ends: ``use_energy=False``, ``use_power=True``, no VTLN, ``snip_edges=True``.

Scale: Kaldi reads 16-bit integers, so a float waveform in [-1, 1] is multiplied by ``waveform_scale=2**15`` for
Kaldi's own numbers (BEATs does this); AST (original code and ``transformers``' extractor) uses the float waveform
as it is, ``waveform_scale=1``. A scale only shifts the log features by ``2 ln(scale)`` above the floor.

Batching: clip ``b`` of a batch ``waveform`` (B, N) is its first ``lengths[b]`` samples; its frames are those it
gets alone (a frame never reaches past its clip's end), and frames past its count are 0. The computation runs in
the waveform's dtype (float32, or float64 for reference-grade numbers).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from common.tensor import lengths_to_mask

WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular")
LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi floors mel energies at FLT_EPSILON before the log
# FFT inputs computed at once (B x frames x fft_size; 4 MB in float32): near-cache-sized blocks run about twice as
# fast as a whole batch at once, with few enough steps, and memory stays bounded for long audio.
BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank options (Kaldi's names, its defaults except where a front end sets them)."""

    sample_rate: int = 16000
    num_mel_bins: int = 23
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: Nyquist + high_freq
    window_type: str = "povey"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    round_to_power_of_two: bool = True
    waveform_scale: float = 1.0  # 2**15 for Kaldi's 16-bit integer scale
    dither: float = 0.0  # Gaussian noise std (in scaled units) added to each frame; training only

    def __post_init__(self) -> None:
        where = f"Invalid FbankConfig {asdict(self)}"
        if self.sample_rate <= 0 or self.num_mel_bins <= 0 or self.frame_shift_ms <= 0:
            raise ValueError(f"{where}: sample_rate, num_mel_bins and frame_shift_ms must be positive")
        if self.frame_length < 2 or self.frame_shift < 1:
            raise ValueError(f"{where}: a frame needs at least 2 samples and a shift at least 1")
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(f"{where}: window_type must be one of {WINDOW_TYPES}")
        nyquist = self.sample_rate / 2
        if not 0 <= self.low_freq < self.high_hz <= nyquist:
            raise ValueError(f"{where}: need 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz), high_freq <= 0 "
                             f"counting from Nyquist (here {self.high_hz:g} Hz)")
        if self.dither < 0 or self.waveform_scale <= 0:
            raise ValueError(f"{where}: need dither >= 0 and waveform_scale > 0")

    @property
    def frame_length(self) -> int:
        """Samples per frame (W)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)  # Kaldi's order of operations and truncation

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts (S)."""
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def fft_size(self) -> int:
        """FFT length: the frame length, or the next power of two at or above it."""
        w = self.frame_length
        return 1 << (w - 1).bit_length() if self.round_to_power_of_two else w

    @property
    def high_hz(self) -> float:
        """Upper edge of the mel banks in Hz."""
        return self.high_freq if self.high_freq > 0 else self.sample_rate / 2 + self.high_freq


def num_frames(lengths: Tensor, config: FbankConfig) -> Tensor:
    """Frames of clips of ``lengths`` samples (``snip_edges``): ``1 + (L - W) // S``, 0 when ``L < W``. (B,) -> (B,)."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    w, s = config.frame_length, config.frame_shift
    return torch.where(lengths >= w, torch.div(lengths - w, s, rounding_mode="floor") + 1, 0)


def mel_scale(freq: Tensor) -> Tensor:
    """Kaldi's mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(freq / 700.0)


@lru_cache(maxsize=16)
def _mel_banks(sample_rate: int, fft_size: int, num_bins: int, low: float, high: float) -> Tensor:
    """Kaldi's triangular mel banks, (num_bins, fft_size // 2 + 1) float64 (the Nyquist column is 0, as in Kaldi)."""
    mel_low, mel_high = (mel_scale(torch.tensor(f, dtype=torch.float64, device="cpu")) for f in (low, high))
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * torch.arange(num_bins + 2, dtype=torch.float64, device="cpu")  # left, centre, right
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1)
    fft_hz = torch.arange(fft_size // 2, dtype=torch.float64, device="cpu") * (sample_rate / fft_size)
    mel = mel_scale(fft_hz)[None]  # (1, K) centre of each FFT bin but Nyquist
    up, down = (mel - left) / (centre - left), (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (M, K), 0 outside (left, right)
    return F.pad(banks, (0, 1))  # (M, K + 1)


@lru_cache(maxsize=16)
def _window(window_type: str, length: int) -> Tensor:
    """Kaldi's analysis windows (symmetric), (length,) float64."""
    n = torch.arange(length, dtype=torch.float64, device="cpu")
    cosine = torch.cos(2 * math.pi * n / (length - 1))
    if window_type == "povey":
        return (0.5 - 0.5 * cosine).pow(0.85)
    if window_type == "hanning":
        return 0.5 - 0.5 * cosine
    if window_type == "hamming":
        return 0.54 - 0.46 * cosine
    return torch.ones(length, dtype=torch.float64, device="cpu")  # rectangular


def _check_input(waveform: Tensor, lengths: Tensor | None) -> Tensor:
    """Validated lengths (B,) long on the waveform's device (all N when None)."""
    if waveform.dim() != 2 or not waveform.is_floating_point():
        raise ValueError(f"Invalid waveform. (expected float (B, N), found {waveform.dtype} "
                         f"of shape {tuple(waveform.shape)})")
    b, n = waveform.shape
    if lengths is None:
        return torch.full((b,), n, dtype=torch.long, device=waveform.device)
    lengths = torch.as_tensor(lengths, device=waveform.device)
    if lengths.shape != (b,) or lengths.is_floating_point() or bool(((lengths < 0) | (lengths > n)).any()):
        raise ValueError(f"Invalid lengths. (expected {b} integers in [0, {n}], found {lengths.tolist()})")
    return lengths.long()


def _log_mel(frames: Tensor, config: FbankConfig, window: Tensor, banks: Tensor,
             generator: torch.Generator | None) -> Tensor:
    """Frames of raw samples (B, T, W) -> log mel energies (B, T, M), Kaldi's steps in Kaldi's order."""
    if config.waveform_scale != 1.0:
        frames = frames * config.waveform_scale
    if config.dither > 0:
        noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype, device=frames.device)
        frames = frames + config.dither * noise
    if config.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if config.preemphasis != 0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[i - 1], with x[-1] := x[0]
        frames = frames - config.preemphasis * previous
    spectrum = torch.view_as_real(torch.fft.rfft(frames * window, n=config.fft_size))  # (B, T, K + 1, 2)
    power = spectrum.pow(2).sum(dim=-1)  # re^2 + im^2: (B, T, K + 1)
    return torch.matmul(power, banks.T).clamp(min=LOG_FLOOR).log()


def fbank(waveform: Tensor, lengths: Tensor | None = None, config: FbankConfig = FbankConfig(), *,
          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Kaldi log mel filterbank of a zero-padded batch.

    Args:
        waveform: (B, N) float; clip ``b`` is ``waveform[b, :lengths[b]]``.
        lengths: (B,) valid samples per clip, or None (all N).
        config: the options (module docstring).
        generator: the random source for ``config.dither`` (seed it for repeatable training noise).

    Returns:
        fbank (B, T, num_mel_bins) in the waveform's dtype, T = the most frames of any clip (0 if every clip is
        shorter than one frame), frames past a clip's count set to 0; and frame counts (B,) long.
    """
    lengths = _check_input(waveform, lengths)
    counts = num_frames(lengths, config)
    b = waveform.shape[0]
    t = int(counts.max()) if b else 0
    if t == 0:
        return waveform.new_zeros(b, 0, config.num_mel_bins), counts
    w, s = config.frame_length, config.frame_shift
    frames = waveform[:, :(t - 1) * s + w].unfold(1, w, s)  # (B, T, W) view, every frame inside the batch
    window = _window(config.window_type, w).to(waveform.device, waveform.dtype)
    banks = _mel_banks(config.sample_rate, config.fft_size, config.num_mel_bins, float(config.low_freq),
                       float(config.high_hz)).to(waveform.device, waveform.dtype)  # (M, fft_size // 2 + 1)
    step = max(32, BLOCK_ELEMENTS // (b * config.fft_size))  # frames per block (at least 32: few Python steps)
    with torch.autocast(waveform.device.type, enabled=False):  # the filterbank in the input's dtype under autocast
        mel = torch.cat([_log_mel(frames[:, i:i + step], config, window, banks, generator)
                         for i in range(0, t, step)], dim=1)  # (B, T, M)
    mel = mel.masked_fill(~lengths_to_mask(counts, t)[..., None], 0.0)  # frames past each clip's count are 0
    return mel, counts


__all__ = ["FbankConfig", "LOG_FLOOR", "WINDOW_TYPES", "fbank", "mel_scale", "num_frames"]
