"""Waveforms for training: a split's clips decoded once and held in memory, and seeded random crops.

Shared by every trainer that reads audio (retrieval, tagging). Waveforms are decoded at the audio encoder's sample
rate and held as float32: a split costs ``4 bytes x sample_rate x total seconds`` (e.g. 600 clips of 5 s at 16 kHz:
190 MB; Clotho development, 3,839 clips of ~22 s at 32 kHz: ~11 GB, so use 16 kHz or ``cache_audio: false`` there).
Under DDP every process holds its own copy. Clips shorter than ``features.audio.MIN_SECONDS`` are zero-padded at
their end to that length by ``load_audio``, as extraction and inference pad them.
"""
from __future__ import annotations

import numpy as np

from features.audio import load_audio
from features.manifest import Manifest


class WaveformStore:
    """Clips of a manifest as float32 mono arrays at ``sample_rate`` (at least ``MIN_SECONDS`` long, short ones
    zero-padded), decoded on first use (kept if ``cache``)."""

    def __init__(self, manifest: Manifest, sample_rate: int, cache: bool = True) -> None:
        self.manifest, self.sample_rate, self.cache = manifest, int(sample_rate), cache
        self._paths = {entry.audio_id: entry.path for entry in manifest.audio}
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, audio_id: str) -> np.ndarray:
        wave = self._arrays.get(audio_id)
        if wave is None:
            wave = load_audio(self._paths[audio_id], self.sample_rate)  # (N,)
            if self.cache:
                self._arrays[audio_id] = wave
        return wave

    def preload(self) -> int:
        """Decode every clip now; returns the bytes held."""
        return sum(self[audio_id].nbytes for audio_id in self._paths)


def random_crop(wave: np.ndarray, crop: int | None, rng: np.random.Generator) -> np.ndarray:
    """``crop`` samples of ``wave`` at an offset drawn from ``rng`` (the whole wave when it is no longer, or
    ``crop`` is None)."""
    if crop is None or len(wave) <= crop:
        return wave
    start = int(rng.integers(0, len(wave) - crop + 1))
    return wave[start:start + crop]
