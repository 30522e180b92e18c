"""Tagging pre-training on the synthetic corpus's scenes generated on the fly: the stream is the same on every run,
its tags are the generator's labels, and a run on it learns, writes its encoder and resumes exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common import load_checkpoint
from corpus.synth import sample_scene
from features.weights import load_audio_encoder
from tagging.data import TAGS, GeneratedScenes, generated_clip, scene_tags
from tagging.train import train


def test_scene_tags_name_each_sound_and_its_attributes():
    scene = sample_scene(np.random.default_rng(3))  # a loud, low bell ringing twice, over an unnoticeable background
    assert scene_tags(scene) == ["bell", "bell count=2", "bell loudness=loud", "bell pitch=low"]
    tags = {t for i in range(300) for t in scene_tags(sample_scene(np.random.default_rng([2026, i, 0])))}
    assert tags <= set(TAGS) and len(tags) > 100 and "background=pink" in tags  # most of the 213 occur


def test_the_stream_is_the_same_on_every_run_and_new_each_epoch():
    a, b = GeneratedScenes(5, 4, 16000, crop_seconds=2.0), GeneratedScenes(5, 4, 16000, crop_seconds=2.0)
    wave, targets = a[1]
    again, same = b[1]
    assert np.array_equal(wave, again) and torch.equal(targets, same)
    assert len(wave) <= 32000 and targets.sum() >= 1 and set(targets.unique().tolist()) <= {0.0, 1.0}
    full, tags = generated_clip(5, 1, 16000)
    assert any(np.array_equal(wave, full[s:s + len(wave)]) for s in range(len(full) - len(wave) + 1))  # a crop
    assert [TAGS[k] for k in torch.nonzero(targets).flatten().tolist()] == tags
    b.set_epoch(1)
    assert not np.array_equal(b[1][0][:1000], wave[:1000])  # epoch 1 holds clips 4-7


def _settings(exp_dir, **extra) -> dict:
    return {"exp_dir": str(exp_dir), "data.source": "generated", "data.generated.clips_per_epoch": 24,
            "data.generated.val_clips": 12, "data.crop_seconds": 2.0, "model.audio_encoder.name": "cnn6",
            "model.audio_encoder.width": 0.125, "model.audio_encoder.spec_augment": False, "train.epochs": 3,
            "train.batch_size": 8, "train.lr": 3e-3, "train.warmup_epochs": 0.5, **extra}


@pytest.mark.slow
def test_pretraining_on_generated_scenes_learns_and_resumes_exactly(tmp_path):
    result = train(None, _settings(tmp_path / "full"))
    history = result["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(np.isfinite(h["val_mAP"]) for h in history)
    best = load_checkpoint(tmp_path / "full" / "best.pt", kind="tagger")
    assert best["classes"] == TAGS
    encoder = load_audio_encoder(tmp_path / "full" / "audio_encoder.pt")
    assert all(torch.equal(v, best["state_dict"][f"audio_encoder.{k}"]) for k, v in encoder.state_dict().items())
    # killed after epoch 1 (with a worker generating), the same command ends with the same weights
    train(None, _settings(tmp_path / "resumed", **{"data.num_workers": 1}), stop_after_epochs=1)
    train(None, _settings(tmp_path / "resumed", **{"data.num_workers": 1}))
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt")["state_dict"] for name in ("full", "resumed"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_an_unknown_source_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"data.source: unknown 'audioset' \(valid: generated, manifests\)"):
        train(None, _settings(tmp_path / "x", **{"data.source": "audioset"}))
    assert not (tmp_path / "x").exists()
