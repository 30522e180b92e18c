"""The tagger (binary cross-entropy on labels) and the untrained encoder: the claims recipe's other feature
extractors, each written in the format feature extraction reads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common import load_checkpoint
from features.manifest import read_manifest, write_manifest
from tagging.model import macro_average_precision
from tagging.train import train
from features.untrained import untrained
from features.weights import load_audio_encoder
from tests.retrieval.conftest import make_corpus


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict:
    """The retrieval tests' tiny corpus (6 kinds of sound) with each clip's kind as its label."""
    root = tmp_path_factory.mktemp("labelled")
    out = {}
    for split, folder in make_corpus(root, {"train": 6, "val": 3}).items():
        manifest = read_manifest(folder)
        manifest.labels = {i: [i.split("_")[1]] for i in manifest.ids}
        out[split] = write_manifest(manifest, root / "labelled")
    return out


def _settings(corpus: dict, exp_dir, **extra) -> dict:
    return {"data.train_manifest": str(corpus["train"]), "data.val_manifest": str(corpus["val"]),
            "exp_dir": str(exp_dir), "data.crop_seconds": 1.0, "model.audio_encoder.name": "cnn6",
            "model.audio_encoder.width": 0.125, "model.audio_encoder.spec_augment": False, "train.epochs": 8,
            "train.batch_size": 6, "train.lr": 3e-3, "train.warmup_epochs": 0.5, **extra}


def test_macro_average_precision():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.7, 0.4], [0.1, 0.2, 0.3]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: its positive first -> 1; class 2: no positive
    assert macro_average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert macro_average_precision(scores[:, :1] * 0 + np.array([[3.0], [1.0], [2.0]]), targets[:, :1]) == 1.0


@pytest.mark.slow
def test_tagger_learns_writes_its_encoder_and_resumes_exactly(labelled, tmp_path):
    result = train(None, _settings(labelled, tmp_path / "full"))
    history = result["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_mAP"] for h in history) > 0.5  # 6 classes, 3 clips each: chance is about 0.3
    best = load_checkpoint(tmp_path / "full" / "best.pt", kind="tagger")
    assert best["classes"] == ["chirp", "clicks", "high", "low", "noise", "pulse"]
    encoder = load_audio_encoder(tmp_path / "full" / "audio_encoder.pt")  # the file features.extract reads
    assert encoder.spec["name"] == "cnn6"
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, best["state_dict"][f"audio_encoder.{key}"]), key
    # killed after epoch 3, the same command ends with the same weights
    train(None, _settings(labelled, tmp_path / "resumed"), stop_after_epochs=3)
    train(None, _settings(labelled, tmp_path / "resumed"))
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt")["state_dict"] for name in ("full", "resumed"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_tagger_refuses_a_split_without_labels(tmp_path):
    folders = make_corpus(tmp_path / "corpus", {"train": 1})
    with pytest.raises(ValueError, match="no labelled clips"):
        train(None, {"data.train_manifest": str(folders["train"]), "exp_dir": str(tmp_path / "exp")})


def test_untrained_encoder_keeps_the_architecture_and_measures_batch_norms(labelled, tmp_path):
    from features.encoders import build_audio_encoder
    from features.weights import save_audio_encoder

    like = tmp_path / "like.pt"
    save_audio_encoder(build_audio_encoder("cnn6", width=0.125, sample_rate=16000), like)
    a, b = (untrained(str(like), str(tmp_path / f"{name}.pt"), seed=3) for name in ("a", "b"))
    c = untrained(str(like), str(tmp_path / "c.pt"), seed=3, manifest=str(labelled["train"]))
    a, b, c = (load_audio_encoder(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the seed decides the weights
    weights = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(a[k], c[k]) for k in weights)  # measuring statistics changes no weight
    assert not torch.equal(a["bn0.running_mean"], c["bn0.running_mean"])
    assert c["bn0.running_mean"].abs().mean() > 1.0  # log-mel energies, far from the initial 0
