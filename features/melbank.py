"""PANNs' STFT and log-mel modules, built without librosa: the same weights as torchlibrosa's, in the same names.

torchlibrosa computes its Hann window and mel filter bank with ``librosa.filters``, whose import (scipy.signal and
numba) and the full DFT matrix took about 2 s of every command that builds a CNN, before any audio was read. These
modules compute the same numbers with numpy in a few milliseconds (``tests/features/test_melbank.py`` checks them
equal to torchlibrosa's and librosa's, bit for bit) and keep torchlibrosa's parameter names
(``stft.conv_real.weight``, ``stft.conv_imag.weight``, ``melW``), so official PANNs checkpoints load unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def periodic_hann(n: int) -> np.ndarray:
    """The periodic ("fftbins") Hann window of n samples, computed as scipy.signal.get_window computes it."""
    fac = np.linspace(-np.pi, np.pi, n + 1)
    return (0.5 + 0.5 * np.cos(fac))[:n]


# Slaney's mel scale: linear below 1 kHz (F_SP Hz per mel), logarithmic above (LOGSTEP per mel)
F_SP, MIN_LOG_HZ, LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
MIN_LOG_MEL = MIN_LOG_HZ / F_SP


def _hz_to_mel(hz: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    mels = hz / F_SP
    above = hz >= MIN_LOG_HZ
    mels[above] = MIN_LOG_MEL + np.log(hz[above] / MIN_LOG_HZ) / LOGSTEP
    return mels


def _mel_to_hz(mels: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    hz = F_SP * mels
    above = mels >= MIN_LOG_MEL
    hz[above] = MIN_LOG_HZ * np.exp(LOGSTEP * (mels[above] - MIN_LOG_MEL))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool = False,
                   norm: str | None = "slaney") -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), float32, as ``librosa.filters.mel`` makes them: Slaney's
    mel scale (or HTK's), each filter's area normalised (``norm="slaney"``) or not (None)."""
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = _hz_to_mel(np.array([float(fmin), float(fmax)]), htk)
    mel_hz = _mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2), htk)  # (n_mels + 2,) band edges and centres
    widths = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    if norm == "slaney":
        weights *= (2.0 / (mel_hz[2:n_mels + 2] - mel_hz[:n_mels]))[:, None]
    elif norm is not None:
        raise ValueError(f"Invalid norm. (expected 'slaney' or None, found {norm!r})")
    return weights


class _STFT(nn.Module):
    """Windowed DFT as two strided convolutions (real and imaginary parts), torchlibrosa's layout."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        k, n = np.meshgrid(np.arange(bins), np.arange(n_fft))  # (n_fft, bins)
        dft = np.power(np.exp(-2 * np.pi * 1j / n_fft), n * k) * periodic_hann(n_fft)[:, None]  # as torchlibrosa
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.real(dft).T.astype(np.float32))[:, None, :])
            self.conv_imag.weight.copy_(torch.from_numpy(np.imag(dft).T.astype(np.float32))[:, None, :])
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) -> real and imaginary parts, each (B, 1, T, n_fft // 2 + 1); frames start at sample 0."""
        x = x[:, None, :]  # (B, 1, N)
        return self.conv_real(x)[:, None].transpose(2, 3), self.conv_imag(x)[:, None].transpose(2, 3)


class Spectrogram(nn.Module):
    """Power spectrogram (B, N) -> (B, 1, T, n_fft // 2 + 1) with a periodic Hann window, frames without padding
    (the caller pads; see ``features.frontend.centred_pad``)."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.stft = _STFT(n_fft, hop_length)

    def forward(self, x: Tensor) -> Tensor:
        real, imag = self.stft(x)
        return real ** 2 + imag ** 2


class LogmelFilterBank(nn.Module):
    """Power spectrogram (..., F) -> log-mel power in dB (..., M), ``10 log10(max(power @ melW, amin))`` (reference
    power 1, no top_db: PANNs' settings)."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float,
                 amin: float = 1e-10) -> None:
        super().__init__()
        self.amin = amin
        bank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
        self.melW = nn.Parameter(torch.from_numpy(np.ascontiguousarray(bank.T)), requires_grad=False)  # (F, M)

    def forward(self, power: Tensor) -> Tensor:
        return 10.0 * torch.log10(torch.clamp(torch.matmul(power, self.melW), min=self.amin))
