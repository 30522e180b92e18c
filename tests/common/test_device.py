"""``--device`` of every command that runs a model (and ``train.device``): auto, cpu, cuda, cuda:N; a GPU asked for
where there is none, or a name torch does not know, is refused at once, before any file is read, with a message
naming the option. Where each command really runs on a GPU: tests/gpu/test_inference.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aactk
from captioning.answer import main as answer
from captioning.classify import classify
from captioning.decode import decode
from captioning.infer import infer
from common.device import resolve_device
from features.extract import extract
from retrieval.evaluate import evaluate
from retrieval.index import AudioIndex, build, update
from retrieval.search import rank, search_audio, search_text
from retrieval.zeroshot import zero_shot
from serve.__main__ import serve

REPO = Path(__file__).resolve().parents[2]
NO_GPU = "device: 'cuda', but torch sees no GPU here"


def test_names(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="train.device: 'cuda:1', but torch sees no GPU here"):
        resolve_device("cuda:1", "train.device")
    with pytest.raises(ValueError, match=r"device: unknown 'gpu' \(valid: auto, cpu, cuda, cuda:N\)"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device: 'meta' is not supported"):
        resolve_device("meta")


MISSING = "no-such-file"
COMMANDS = {  # each with inputs that do not exist: the device is refused before any of them is looked at
    "extract": lambda out: extract(MISSING, MISSING, str(out / "f.h5"), device="cuda", progress=False),
    "evaluate": lambda out: evaluate(MISSING, MISSING, device="cuda"),
    "search text": lambda out: search_text(MISSING, MISSING, "a dog barks", device="cuda"),
    "search audio": lambda out: search_audio(MISSING, MISSING, MISSING, device="cuda"),
    "search rank": lambda out: rank(MISSING, MISSING, MISSING, str(out / "r.csv"), device="cuda"),
    "index build": lambda out: build(MISSING, MISSING, str(out / "i.h5"), device="cuda"),
    "index update": lambda out: update(MISSING, device="cuda"),
    "index open": lambda out: AudioIndex(MISSING, device="cuda"),
    "decode": lambda out: decode(MISSING, MISSING, str(out / "p.json"), device="cuda"),
    "answer": lambda out: answer(MISSING, MISSING, MISSING, str(out / "a.json"), device="cuda"),
    "classify": lambda out: classify(MISSING, MISSING, device="cuda"),
    "zeroshot": lambda out: zero_shot(MISSING, MISSING, "dog,cat", device="cuda"),
    "caption": lambda out: infer(MISSING, bundle=MISSING, device="cuda", progress=False),
    "caption, checkpoints": lambda out: infer(MISSING, audio_encoder=MISSING, captioners=MISSING, device="cuda"),
    "serve": lambda out: serve(bundle=MISSING, device="cuda"),
    "api captioner": lambda out: aactk.Captioner.load(MISSING, device="cuda"),
    "api retriever": lambda out: aactk.Retriever.load(MISSING, device="cuda"),
    "api index": lambda out: aactk.open_index(MISSING, device="cuda"),
    "api build index": lambda out: aactk.build_index(MISSING, MISSING, out / "i.h5", device="cuda"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_gpu_it_lacks_before_reading_anything(command, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=NO_GPU):
        COMMANDS[command](tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_onnx_runs_on_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="runtime 'onnx' runs on the CPU"):
        infer(MISSING, bundle=MISSING, runtime="onnx", onnx_dir=str(tmp_path), device="cuda:0", progress=False)


def test_on_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "captioning.infer", "clip.wav", "--bundle", "b.pt", "--device",
                           "cuda:7"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode != 0 and "device: 'cuda:7', but torch sees no GPU here" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
