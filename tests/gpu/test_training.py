"""Every trainer on a CUDA GPU, in each arithmetic: two epochs, a finite loss, the arithmetic recorded, and the same
run killed after its first epoch and resumed ends where the straight run ends (within GPU kernels' rounding).

    python -m pytest -m gpu      (never in the default run; stops at once on a machine without a GPU)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from captioning.train import train as train_captioner
from captioning.train_lm import train as train_lm
from retrieval.train import train as train_retrieval
from tagging.train import train as train_tagger
from tests.captioning.conftest import tiny_overrides, toy_data  # noqa: F401 - toy caption features
from tests.gpu.conftest import DEVICE
from tests.captioning.test_prefix_lm import lm_overrides
from tests.retrieval.conftest import _tiny_settings
from tests.tagging.test_tagger import _settings as tagger_settings, labelled  # noqa: F401 - a labelled tiny corpus

pytestmark = pytest.mark.gpu
PRECISIONS = ["fp32", "bf16", "fp16"] if DEVICE == "cuda" else ["fp32", "bf16"]  # fp16 with its loss scaler
GPU = {"train.device": DEVICE, "train.epochs": 2}


def history(exp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (exp / "history.jsonl").read_text().splitlines()]


def loss(record: dict[str, Any]) -> float:
    """An epoch's training loss, whichever name its trainer gives it."""
    return record["train_loss"] if "train_loss" in record else record["loss"]


def killed_and_resumed(train: Callable, settings: Callable[[Path], dict], tmp_path: Path, precision: str) -> None:
    """``train`` straight for two epochs, then stopped after one and resumed; both on the GPU in ``precision``."""
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    train(None, settings(straight) | GPU | {"train.precision": precision})
    train(None, settings(parts) | GPU | {"train.precision": precision}, stop_after_epochs=1)
    train(None, settings(parts) | GPU | {"train.precision": precision})
    whole, resumed = history(straight), history(parts)
    assert len(whole) == len(resumed) == 2 and all(math.isfinite(loss(r)) for r in whole + resumed)
    assert all(r["precision"] == precision for r in whole + resumed), whole
    for a, b in zip(whole, resumed):
        assert loss(b) == pytest.approx(loss(a), rel=1e-3, abs=1e-4)
    state = torch.load(parts / "last.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_retrieval(tiny_corpus, tmp_path, precision):
    killed_and_resumed(train_retrieval, lambda exp: _tiny_settings(tiny_corpus, exp), tmp_path, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tagger(labelled, tmp_path, precision):  # noqa: F811
    killed_and_resumed(train_tagger, lambda exp: tagger_settings(labelled, exp), tmp_path, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_captioner_xe(toy_data, tmp_path, precision, decoder):  # noqa: F811
    killed_and_resumed(train_captioner, lambda exp: tiny_overrides(toy_data, exp, decoder=decoder), tmp_path,
                       precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_captioner_scst(toy_data, tmp_path, precision):  # noqa: F811
    train_captioner(None, tiny_overrides(toy_data, tmp_path / "xe") | GPU | {"train.epochs": 1})
    scst = {"train.mode": "scst", "train.init": str(tmp_path / "xe" / "last.pt"), "train.lr": 1e-4,
            "scst.num_samples": 2, "scst.max_len": 8}
    killed_and_resumed(train_captioner, lambda exp: tiny_overrides(toy_data, exp) | scst, tmp_path / "scst",
                       precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["lora", "pengi"])
def test_prefix_lm(toy_data, tiny_lm, tmp_path, precision, kind):  # noqa: F811
    extra = ({"model.lora": {"r": 4, "alpha": 8}} if kind == "lora" else
             {"model.lora": {"r": 0}, "model.mapping": "transformer", "model.prompt_encoder": "minilm"})
    killed_and_resumed(train_lm, lambda exp: lm_overrides(toy_data, exp, tiny_lm, **extra), tmp_path, precision)
