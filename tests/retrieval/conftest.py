"""A tiny corpus of distinguishable sounds with captions, written as manifests, for fast retrieval tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from features.manifest import AudioEntry, Manifest, write_manifest

RATE = 16000
# sound kind -> (generator, captions); each clip of a kind gets all its captions
KINDS = {
    "low": ("a low hum drones steadily", "a deep constant tone", "low pitched humming"),
    "high": ("a high pitched beep sounds", "a shrill whistle rings", "a sharp high tone"),
    "noise": ("static hisses loudly", "white noise rushes", "a hissing sound like wind"),
    "clicks": ("a clock ticks rapidly", "sharp clicks repeat", "something taps quickly"),
    "chirp": ("a siren sweeps upward", "a rising tone wails", "the pitch slides up"),
    "pulse": ("a tone pulses on and off", "an alarm beeps repeatedly", "short beeps repeat"),
}

WHERE = ("nearby", "far away", "in a room", "outside", "for a while", "again", "quietly", "loudly", "briefly",
         "all the time")


def _sound(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f = rng.uniform(0.9, 1.1)
    if kind == "low":
        x = np.sin(2 * np.pi * 120 * f * t)
    elif kind == "high":
        x = np.sin(2 * np.pi * 3000 * f * t)
    elif kind == "noise":
        x = rng.standard_normal(len(t)) * 0.5
    elif kind == "clicks":
        x = np.zeros(len(t))
        x[:: int(RATE / (12 * f))] = 1.0
    elif kind == "chirp":
        x = np.sin(2 * np.pi * (300 + 1500 * f * t / seconds) * t)
    else:
        x = np.sin(2 * np.pi * 800 * f * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    x = x + 0.02 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def make_corpus(root: Path, clips_per_kind: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """Write wavs and one manifest per split; returns ``{split: split_dir}``. Durations 1.0-2.0 s."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in clips_per_kind.items():
        audio, captions = [], {}
        for kind in KINDS:
            for k in range(n):
                audio_id = f"{split}_{kind}_{k}"
                path = root / "wav" / f"{audio_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                seconds = float(rng.uniform(1.0, 2.0))
                sf.write(path, _sound(kind, seconds, rng), RATE)
                audio.append(AudioEntry(audio_id, str(path), seconds, RATE, 1))
                # unique wording per clip, so no two captions tie exactly in audio-to-text ranking
                captions[audio_id] = [f"{c} {WHERE[(k + j) % len(WHERE)]}" for j, c in enumerate(KINDS[kind])]
        out[split] = write_manifest(Manifest(split, audio, captions), root / "manifests")
    return out


def _tiny_settings(corpus: dict[str, Path], exp_dir: Path, **extra) -> dict:
    """A CPU-second-scale run: narrow CNN6, frozen MiniLM, 1-s crops (dotted keys as on the command line)."""
    settings = {
        "data.train_manifest": str(corpus["train"]), "data.val_manifest": str(corpus["val"]),
        "exp_dir": str(exp_dir), "data.crop_seconds": 1.0,
        "model.audio_encoder.name": "cnn6", "model.audio_encoder.width": 0.125,
        "model.audio_encoder.spec_augment": False, "model.text_encoder.freeze_layers": -1, "model.embed_dim": 32,
        "train.epochs": 3, "train.batch_size": 16, "train.lr": 3e-3, "train.warmup_epochs": 0.5,
        "train.log_interval": 1000,
    }
    settings.update(extra)
    return settings


@pytest.fixture(scope="session")
def tiny_settings():
    """``tiny_settings(corpus, exp_dir, **extra)`` -> settings of a seconds-long training run."""
    return _tiny_settings
