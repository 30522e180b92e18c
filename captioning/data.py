"""Caption data over HDF5 feature stores: (clip, caption) pairs for training, clips alone for decoding.

Batches are dicts with fixed keys: ``audio_ids`` (list[str]), ``frames`` [B, T, D] float32 (zero-padded),
``frame_lengths`` [B] and, for caption batches, ``tokens`` [B, L] (``<bos> .. <eos>`` then ``<pad>``) and
``token_lengths`` [B] (counting ``<bos>`` and ``<eos>``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from captioning.vocab import Vocabulary
from features.manifest import read_captions, read_manifest
from features.store import FeatureStore, open_store


def load_captions(path: str | Path) -> dict[str, list[str]]:
    """``{audio_id: [caption, ...]}`` from a manifest split folder or a ``captions.json`` file."""
    path = Path(path)
    if path.is_dir():
        return read_manifest(path).captions
    if not path.is_file():
        raise ValueError(f"{path}: captions not found (expected a split folder or a captions.json file)")
    return read_captions(path)


def open_checked_store(path: str | Path, expect: Mapping[str, Any] | None = None,
                       need_ids: list[str] | None = None) -> FeatureStore:
    """Open a store, refusing one made differently from ``expect`` or lacking any of ``need_ids``."""
    store = open_store(path, expect={k: v for k, v in (expect or {}).items() if v is not None})
    absent = [i for i in (need_ids or []) if i not in store]
    if absent:
        raise ValueError(f"{path}: no features for {len(absent)} captioned clip(s), e.g. {absent[:3]}")
    return store


class CaptionPairs(Dataset):
    """Every (clip, caption) pair: item i is ``{"audio_id", "frames" [T, D], "tokens" [L]}``."""

    def __init__(self, store: FeatureStore, captions: Mapping[str, list[str]], vocab: Vocabulary,
                 max_words: int = 30):
        self.store, self.vocab, self.max_words = store, vocab, max_words
        self.pairs = [(audio_id, c) for audio_id, caps in captions.items() for c in caps]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        audio_id, caption = self.pairs[i]
        return {"audio_id": audio_id, "frames": torch.from_numpy(self.store.frames(audio_id)).float(),
                "tokens": torch.tensor(self.vocab.encode(caption, self.max_words), dtype=torch.long)}


class Clips(Dataset):
    """Clips alone (for decoding): item i is ``{"audio_id", "frames" [T, D]}``."""

    def __init__(self, store: FeatureStore, audio_ids: list[str] | None = None):
        self.store = store
        self.audio_ids = list(store.ids if audio_ids is None else audio_ids)

    def __len__(self) -> int:
        return len(self.audio_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        audio_id = self.audio_ids[i]
        return {"audio_id": audio_id, "frames": torch.from_numpy(self.store.frames(audio_id)).float()}


def collate(items: list[dict[str, Any]], pad: int = 0) -> dict[str, Any]:
    """Pad a list of items into one batch (keys in the module docstring)."""
    frame_lengths = torch.tensor([it["frames"].shape[0] for it in items], dtype=torch.long)
    frames = pad_sequence([it["frames"] for it in items], batch_first=True)  # (B, T, D), zeros past each length
    batch: dict[str, Any] = {"audio_ids": [it["audio_id"] for it in items], "frames": frames,
                             "frame_lengths": frame_lengths}
    if "tokens" in items[0]:
        token_lengths = torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long)
        tokens = pad_sequence([it["tokens"] for it in items], batch_first=True, padding_value=pad)  # (B, L)
        batch.update(tokens=tokens, token_lengths=token_lengths)
    return batch
