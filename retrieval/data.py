"""Audio-caption pairs for training and evaluation.

Waveforms are decoded once, at the audio encoder's sample rate, and held in memory as float32: a split costs
``4 bytes x sample_rate x total seconds`` (e.g. 600 clips of 5 s at 16 kHz: 190 MB; Clotho development, 3,839 clips
of ~22 s at 32 kHz: ~11 GB, so use 16 kHz or ``cache_audio: false`` there). Under DDP every process holds its own copy.
Clips shorter than ``features.audio.MIN_SECONDS`` (0.1 s: clicks, drum hits) are zero-padded at their end to that
length by ``load_audio``, as extraction and inference pad them.

Training crops clips longer than ``crop_seconds`` at a random offset drawn from ``(seed, epoch, index)``, so a
batch's content depends only on the seed and epoch (the same after a resume, and across process counts).
Evaluation always uses whole clips.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from features.audio import load_audio
from features.frontend import pad_waveforms
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


class PairDataset(Dataset):
    """(clip, caption) pairs of a manifest; item = (waveform [n], caption, clip index).

    With ``caption_sampling="all"`` an epoch visits every pair; with ``"one"`` it visits every captioned clip once,
    with one of its captions drawn from ``(seed, epoch, index)`` (an epoch 5x shorter on Clotho).
    """

    def __init__(self, manifest: Manifest, store: WaveformStore, crop_seconds: float | None, seed: int = 0,
                 caption_sampling: str = "all") -> None:
        if caption_sampling not in ("all", "one"):
            raise ValueError(f"Invalid caption_sampling. (expected 'all' or 'one', found {caption_sampling!r})")
        self.sampling = caption_sampling
        self.pairs = manifest.pairs()
        self.clips = [(i, manifest.captions[i]) for i in manifest.ids if manifest.captions.get(i)]
        if not self.pairs:
            raise ValueError(f"split '{manifest.split}': no captioned clips to train on")
        self.index = {audio_id: i for i, audio_id in enumerate(manifest.ids)}
        self.store = store
        self.crop = None if crop_seconds is None else int(round(crop_seconds * store.sample_rate))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Crops of epoch ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs) if self.sampling == "all" else len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str, int]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.sampling == "all":
            audio_id, caption = self.pairs[i]
        else:
            audio_id, captions = self.clips[i]
            caption = captions[int(rng.integers(len(captions)))]
        return random_crop(self.store[audio_id], self.crop, rng), caption, self.index[audio_id]


def random_crop(wave: np.ndarray, crop: int | None, rng: np.random.Generator) -> np.ndarray:
    """``crop`` samples of ``wave`` at an offset drawn from ``rng`` (the whole wave when it is no longer, or
    ``crop`` is None)."""
    if crop is None or len(wave) <= crop:
        return wave
    start = int(rng.integers(0, len(wave) - crop + 1))
    return wave[start:start + crop]


def collate_pairs(items: list[tuple[np.ndarray, str, int]]) -> dict[str, object]:
    """Items -> ``{"waveform": [B, N], "lengths": [B], "captions": list[str], "audio_ids": [B]}``."""
    waves, captions, ids = zip(*items)
    waveform, lengths = pad_waveforms(waves)
    return {"waveform": waveform, "lengths": lengths, "captions": list(captions),
            "audio_ids": torch.tensor(ids, dtype=torch.long)}
