"""A small log-mel spectrogram picture of a clip (PNG), for the page: a person sees what a sound is like before
playing it. Numpy and matplotlib's image writer only; about a millisecond per second of audio."""
from __future__ import annotations

import io
import os

import numpy as np

from features.audio import load_audio
from features.melbank import mel_filterbank, periodic_hann

RATE = 16000  # the pictures show up to 8 kHz, whatever the file's rate
WIDTH, HEIGHT = 192, 48  # time columns, mel bands: the picture's pixels
FLOOR_DB = 70.0  # dB below the clip's loudest cell shown as black


def log_mel(wave: np.ndarray, rate: int, width: int = WIDTH, bands: int = HEIGHT) -> np.ndarray:
    """[bands, columns] in dB, at most ``width`` columns evenly spread over the clip (one 32-ms frame each)."""
    n_fft = 1 << int(np.ceil(np.log2(0.032 * rate)))
    wave = np.pad(wave.astype(np.float64), (0, max(0, n_fft - len(wave))))
    columns = min(width, max(1, (len(wave) - n_fft) // (n_fft // 4) + 1))
    starts = np.linspace(0, len(wave) - n_fft, columns).round().astype(int)
    frames = wave[starts[:, None] + np.arange(n_fft)] * periodic_hann(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [columns, n_fft/2 + 1]
    mel = power @ mel_filterbank(rate, n_fft, bands, 0.0, rate / 2).T  # [columns, bands]
    return 10.0 * np.log10(np.maximum(mel, 1e-12)).T


def spectrogram_png(wave: np.ndarray, rate: int) -> bytes:
    """The clip's log-mel spectrogram as a PNG, low frequencies at the bottom, the loudest cell brightest."""
    from matplotlib.image import imsave

    db = log_mel(wave, rate)
    level = np.clip((db - (db.max() - FLOOR_DB)) / FLOOR_DB, 0.0, 1.0)
    out = io.BytesIO()
    imsave(out, level, cmap="magma", vmin=0.0, vmax=1.0, origin="lower", format="png")
    return out.getvalue()


def file_spectrogram_png(path: str | os.PathLike) -> bytes:
    """:func:`spectrogram_png` of an audio file (AudioError when it cannot be read)."""
    return spectrogram_png(load_audio(path, RATE), RATE)
