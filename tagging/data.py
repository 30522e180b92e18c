"""Labelled audio for tagging: the clips of prepared splits, or the synthetic corpus's scenes generated on the fly.

Generated scenes play AudioSet's role offline: an endless labelled stream, each clip rendered when it is needed and
never written to disk, from seeds apart from every recipe corpus (which use seeds 0, 7 and 11). Clip ``i`` of seed
``s`` is the same scene and the same samples on every machine and in every run, so an epoch (``clips_per_epoch``
clips, epoch ``e`` holding clips ``e * clips_per_epoch`` onwards) is the same after a resume. Its tags are the
generator's own labels, finer than sound types as AudioSet's ontology is: each sound's type, and its type with each
attribute the captions speak of (loudness, pitch, count, length, fade), and a noticeable background's colour.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from corpus.synth import EVENT_TYPES, render_scene, sample_scene
from features.frontend import pad_waveforms
from features.manifest import Manifest
from features.waveforms import WaveformStore, random_crop

# the attributes a sound of the generator can have (corpus.synth.scene), each a tag with its type
ATTRIBUTES = {"loudness": ("loud", "quiet"), "pitch": ("low", "medium", "high"), "count": ("1", "2", "3", "several"),
              "length": ("short", "medium", "long"), "fade": ("in", "out")}
BACKGROUNDS = ("white", "pink", "brown")
TAGS = sorted([t for t in EVENT_TYPES] + [f"{t} {a}={v}" for t in EVENT_TYPES for a, vs in ATTRIBUTES.items()
                                          for v in vs] + [f"background={c}" for c in BACKGROUNDS])
SCENE, AUDIO = 0, 1  # RNG streams of a generated clip


def scene_tags(scene: dict) -> list[str]:
    """The tags of a generated scene (see the module docstring), sorted."""
    tags = set()
    for ev in scene["events"]:
        tags.add(ev["type"])
        tags.update(f"{ev['type']} {a}={ev[a]}" for a, values in ATTRIBUTES.items() if ev.get(a) in values)
    if scene["background"]["noticeable"]:
        tags.add(f"background={scene['background']['colour']}")
    return sorted(tags)


def multi_hot(indices: list[int], n_classes: int) -> Tensor:
    return torch.zeros(n_classes).index_fill_(0, torch.tensor(indices, dtype=torch.long), 1.0)


def generated_clip(seed: int, index: int, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Clip ``index`` of the stream ``seed``: its waveform [n] float32 at ``sample_rate`` and its tags."""
    scene = sample_scene(np.random.default_rng([seed, index, SCENE]))
    wave = render_scene(np.random.default_rng([seed, index, AUDIO]), scene, sample_rate)
    return wave.astype(np.float32, copy=False), scene_tags(scene)


class GeneratedScenes(Dataset):
    """One epoch of the generated stream: ``clips_per_epoch`` clips, item = (waveform [n], multi-hot tags
    [len(TAGS)]), cropped to ``crop_seconds`` at an offset drawn with the clip; call :meth:`set_epoch` first."""

    def __init__(self, seed: int, clips_per_epoch: int, sample_rate: int, crop_seconds: float | None) -> None:
        if clips_per_epoch < 1:
            raise ValueError(f"Invalid clips_per_epoch. (expected at least 1, found {clips_per_epoch!r})")
        self.seed, self.n, self.sample_rate, self.epoch = int(seed), int(clips_per_epoch), int(sample_rate), 0
        self.crop = None if crop_seconds is None else int(round(crop_seconds * sample_rate))
        self.index = {tag: k for k, tag in enumerate(TAGS)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, Tensor]:
        index = self.epoch * self.n + i
        wave, tags = generated_clip(self.seed, index, self.sample_rate)
        crop = random_crop(wave, self.crop, np.random.default_rng([self.seed, index, AUDIO, 1]))
        return crop, multi_hot([self.index[t] for t in tags], len(TAGS))


class LabelDataset(Dataset):
    """Labelled clips of a manifest; item = (waveform [n], multi-hot labels [classes]); crops drawn from
    ``(seed, epoch, index)`` as retrieval's are."""

    def __init__(self, manifest: Manifest, store: WaveformStore, classes: list[str], crop_seconds: float | None,
                 seed: int = 0) -> None:
        index = {c: k for k, c in enumerate(classes)}
        self.clips = [(i, [index[c] for c in manifest.labels[i] if c in index]) for i in manifest.ids
                      if manifest.labels.get(i)]
        self.store, self.n_classes = store, len(classes)
        self.crop = None if crop_seconds is None else int(round(crop_seconds * store.sample_rate))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def targets(self, i: int) -> Tensor:
        """Clip i's multi-hot labels [classes]."""
        return multi_hot(self.clips[i][1], self.n_classes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return random_crop(self.store[self.clips[i][0]], self.crop, rng), self.targets(i)


def collate_labelled(items: list[tuple[np.ndarray, Tensor]]) -> dict[str, Tensor]:
    """Items -> ``{"waveform": [B, N], "lengths": [B], "targets": [B, classes]}``."""
    waves, targets = zip(*items)
    waveform, lengths = pad_waveforms(waves)
    return {"waveform": waveform, "lengths": lengths, "targets": torch.stack(targets)}
