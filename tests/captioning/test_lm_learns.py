"""The LoRA captioner learns: on the real SmolLM2-135M-Instruct (from its PyPI package), a handful of clips with one
caption each is memorised within a small number of steps. It fails if anything stops learning (the loss mask, the
audio prefix, the LoRA wiring, the decoding of the prefix-LM)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from captioning.decode import decode
from captioning.train_lm import train
from features.store import create_store

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")]
CAPTIONS = ["a dog barks twice", "rain falls on a tin roof", "a car drives past slowly", "birds sing in the morning",
            "a bell rings three times", "wind blows through the trees", "a baby cries loudly", "water drips in a cave"]
FRAME_DIM = 16


def write_clips(folder):
    """8 clips, each with frames around its own random direction, and one caption each."""
    rng = np.random.default_rng(0)
    ids = [f"clip_{i}" for i in range(len(CAPTIONS))]
    attrs = {"encoder": "toy", "encoder_spec": {"name": "toy"}, "checkpoint_sha256": "", "sample_rate": 16000,
             "frame_hop": 320, "frame_dim": FRAME_DIM, "clip_dim": FRAME_DIM, "dtype": "float32"}
    with create_store(folder / "clips.h5", attrs, ids, [6] * len(ids)) as writer:
        for audio_id in ids:
            frames = 3 * rng.normal(size=FRAME_DIM) + 0.1 * rng.normal(size=(6, FRAME_DIM))
            writer.put(audio_id, frames.astype(np.float32), frames.mean(0).astype(np.float32))
        writer.commit()
    (folder / "captions.json").write_text(json.dumps({i: [c] for i, c in zip(ids, CAPTIONS)}))
    return folder / "clips.h5", folder / "captions.json"


def test_lora_captioner_memorises_a_handful_of_clips(lm_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("AACTK_CACHE", str(lm_cache))
    store, captions = write_clips(tmp_path)
    exp = tmp_path / "exp"
    train(None, {"exp_dir": str(exp), "data.train_features": str(store), "data.train_captions": str(captions),
                 "data.val_features": str(store), "data.val_captions": str(captions), "data.val_clips": 1,
                 "model.lm": "smollm2", "model.prefix_length": 1, "model.lora": {"r": 16, "alpha": 32},
                 "train.batch_size": 8, "train.epochs": 16, "train.lr": 3e-3, "train.warmup_epochs": 2,
                 "train.precision": "fp32", "val.beam_size": 1, "val.max_len": 8})
    losses = [json.loads(line)["loss"] for line in (exp / "history.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.1 < losses[0], losses
    decode(str(exp / "last.pt"), str(store), str(tmp_path / "pred.json"), beam_size=2, max_len=10)
    predicted = {r["audio_id"]: r["caption"] for r in json.loads((tmp_path / "pred.json").read_text())}
    right = sum(predicted[f"clip_{i}"] == c for i, c in enumerate(CAPTIONS))
    assert right >= 7, predicted
