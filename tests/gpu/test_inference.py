"""Inference on a CUDA GPU gives the CPU's results: feature extraction, retrieval evaluation, search, the audio index,
decoding, ``captioning.infer``, the API and the server, each run once with ``--device cpu`` and once on the GPU.

Tolerances: float32 on both sides (TF32 off, ``exact_fp32``), so features, embeddings and similarities agree within
1e-4 (absolute, on values of order 1) and retrieval metrics within one near-tie swap; captions are identical.

    python -m pytest -m gpu      (never in the default run; stops at once on a machine without a GPU)
"""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import aactk
from captioning.decode import decode
from captioning.infer import infer
from captioning.train import train as train_captioner
from features.extract import extract
from features.store import open_store
from retrieval.evaluate import evaluate
from retrieval.index import AudioIndex, build, read_index
from retrieval.search import search_text
from tests.captioning.conftest import tiny_overrides, toy_data  # noqa: F401 - toy caption features
from tests.captioning.test_infer import models  # noqa: F401 - a random encoder and two captioners on Clotho-mini
from tests.gpu.conftest import DEVICE
from tests.serve.conftest import bundle_file, clip_of, index_file, library, running_server  # noqa: F401

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("exact_fp32")]
CLOSE = {"rtol": 1e-4, "atol": 1e-4}
SWAP = 0.02  # one near-tie swapped between the devices moves R@1 of 54 queries by 1/54


def on(device: str, found: torch.nn.Module) -> bool:
    return all(p.device.type == torch.device(device).type for p in found.parameters())


def test_extraction(trained, tiny_corpus, tmp_path):
    stores = {}
    for device in ("cpu", DEVICE):
        out = extract(str(tiny_corpus["val"]), str(trained / "audio_encoder.pt"), str(tmp_path / f"{device}.h5"),
                      device=device, workers=0, progress=False)
        stores[device] = open_store(out)
    cpu, gpu = stores["cpu"], stores[DEVICE]
    assert cpu.ids == gpu.ids and len(cpu.ids) == 18
    for audio_id in cpu.ids:
        np.testing.assert_allclose(gpu.frames(audio_id), cpu.frames(audio_id), **CLOSE)
        np.testing.assert_allclose(gpu.clip(audio_id), cpu.clip(audio_id), **CLOSE)


def test_retrieval_evaluation(trained, tiny_corpus):
    cpu, gpu = (evaluate(str(trained / "best.pt"), str(tiny_corpus["val"]), device=d) for d in ("cpu", DEVICE))
    assert set(cpu["metrics"]) == set(gpu["metrics"])
    for name, value in cpu["metrics"].items():
        assert gpu["metrics"][name] == pytest.approx(value, abs=SWAP), name


def test_search(trained, tiny_corpus):
    cpu, gpu = (dict(search_text(str(trained / "best.pt"), str(tiny_corpus["val"]), "a beep", top=18,
                                 device=d)["results"]) for d in ("cpu", DEVICE))
    assert set(cpu) == set(gpu) and len(cpu) == 18
    assert [gpu[k] for k in cpu] == pytest.approx(list(cpu.values()), **{"abs": 1e-4})


def test_index_build_and_search(trained, library, tmp_path):  # noqa: F811
    for device in ("cpu", DEVICE):
        build(str(library), str(trained / "best.pt"), str(tmp_path / f"{device}.h5"), device=device)
    cpu, gpu = read_index(tmp_path / "cpu.h5"), read_index(tmp_path / f"{DEVICE}.h5")
    assert cpu["paths"] == gpu["paths"] and len(cpu["paths"]) == 18
    np.testing.assert_allclose(gpu["embeddings"][0], cpu["embeddings"][0], **CLOSE)
    index = AudioIndex(tmp_path / "cpu.h5", device=DEVICE)
    assert on(DEVICE, index.models[0])
    found, expected = dict(index.search("static hisses", top=18)), dict(AudioIndex(tmp_path / "cpu.h5").search(
        "static hisses", top=18))
    assert set(found) == set(expected)
    assert [found[k] for k in expected] == pytest.approx(list(expected.values()), abs=1e-4)


def test_decoding(toy_data, tmp_path):  # noqa: F811
    train_captioner(None, tiny_overrides(toy_data, tmp_path / "xe", epochs=2))
    captions = {}
    for device in ("cpu", DEVICE):
        out = tmp_path / f"{device}.json"
        decode(str(tmp_path / "xe" / "last.pt"), str(toy_data["val_features"]), str(out), beam_size=3, max_len=12,
               device=device)
        captions[device] = json.loads(out.read_text())
    assert captions[DEVICE] == captions["cpu"] and len(captions["cpu"]) == 8


def test_caption_command_and_api(models, tmp_path):  # noqa: F811
    checkpoints = {"audio_encoder": str(models["encoder"]), "captioners": f"{models['a']},{models['b']}"}
    cpu, gpu = (infer(str(models["audio"]), **checkpoints, beam_size=3, device=d, progress=False)["captions"]
                for d in ("cpu", DEVICE))
    assert gpu == cpu and len(cpu) == 7
    captioner = aactk.Captioner.load(**checkpoints, device=DEVICE)
    assert on(DEVICE, captioner.pipeline.encoder) and all(on(DEVICE, m) for m in captioner.pipeline.scorer.models)
    rows = captioner.caption(models["audio"], beam_size=3)
    assert {r["audio_id"]: r["caption"] for r in rows} == cpu


def test_server(bundle_file, index_file, library, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")  # the server's process: float32 as float32, like exact_fp32
    clip = clip_of(library, "chirp")
    expected = aactk.Captioner.load(bundle_file, device="cpu").caption(clip)[0]["caption"]
    expected_search = dict(aactk.open_index(index_file, device="cpu").search("a chirp rises", top=5))
    with running_server(tmp_path / "server.log", "--bundle", str(bundle_file), "--index", str(index_file),
                        "--device", DEVICE) as (base, _):
        health = httpx.get(f"{base}/health", timeout=10).json()
        caption = httpx.post(f"{base}/api/caption", files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                             timeout=120).json()
        found = httpx.post(f"{base}/api/search", json={"query": "a chirp rises", "top": 5}, timeout=120).json()
    assert set(health["devices"].values()) == {str(torch.device(DEVICE, 0) if DEVICE == "cuda" else DEVICE)}
    assert caption["caption"] == expected, caption
    results = {r["file"]: r["score"] for r in found["results"]}  # scores rounded to 4 decimals
    assert set(results) == set(expected_search)
    assert [results[k] for k in expected_search] == pytest.approx(list(expected_search.values()), abs=2e-4)
