"""Audio-caption pairs for training and evaluation.

Waveforms come from :class:`features.waveforms.WaveformStore` (decoded once, held in memory).

Training crops clips longer than ``crop_seconds`` at a random offset drawn from ``(seed, epoch, index)``, so a
batch's content depends only on the seed and epoch (the same after a resume, and across process counts).
Evaluation always uses whole clips.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from features.frontend import pad_waveforms
from features.manifest import Manifest
from features.waveforms import WaveformStore, random_crop


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


def collate_pairs(items: list[tuple[np.ndarray, str, int]]) -> dict[str, object]:
    """Items -> ``{"waveform": [B, N], "lengths": [B], "captions": list[str], "audio_ids": [B]}``."""
    waves, captions, ids = zip(*items)
    waveform, lengths = pad_waveforms(waves)
    return {"waveform": waveform, "lengths": lengths, "captions": list(captions),
            "audio_ids": torch.tensor(ids, dtype=torch.long)}
