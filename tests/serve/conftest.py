"""Real tiny models for the server's tests: the shared trained bi-encoder (tests/conftest.py) indexes the tiny
corpus's validation clips, and a caption bundle joins its audio encoder to a small random captioner whose vocabulary
is the corpus's captions. Plus audio files the server must refuse, and ``python -m serve`` run for real."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from captioning.bundle import load_bundle, make_bundle
from captioning.vocab import Vocabulary
from features.manifest import read_manifest
from features.weights import checkpoint_sha256, load_audio_encoder
from retrieval.index import AudioIndex, sync
from serve import Limits, create_app
from tests.captioning.conftest import one_thread, save_random_captioner  # noqa: F401  (one_thread: autouse)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def library(tiny_corpus, tmp_path_factory) -> Path:
    """The 18 validation clips (3 per kind of sound), in two sub-folders as a sound library would have them."""
    out = tmp_path_factory.mktemp("library")
    for entry in read_manifest(tiny_corpus["val"]).audio:
        kind = entry.audio_id.split("_")[1]
        target = out / ("tones" if kind in ("low", "high", "chirp", "pulse") else "noises") / f"{entry.audio_id}.wav"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(entry.path, target)
    return out


@pytest.fixture(scope="session")
def index_file(trained, library, tiny_corpus, tmp_path_factory) -> Path:
    """The library indexed, each file with its first caption in the split it was copied from (matched by name)."""
    out = tmp_path_factory.mktemp("index") / "library.h5"
    sync(library, str(trained / "best.pt"), out, captions=tiny_corpus["val"])
    return out


@pytest.fixture(scope="session")
def bundle_file(trained, tiny_corpus, tmp_path_factory) -> Path:
    """The trained audio encoder and a random Transformer captioner (as tests/captioning/test_infer.py makes them),
    in one bundle."""
    folder = tmp_path_factory.mktemp("bundle")
    encoder_path = trained / "audio_encoder.pt"
    encoder = load_audio_encoder(encoder_path)
    captions = json.loads((tiny_corpus["train"] / "captions.json").read_text(encoding="utf-8"))
    vocab = Vocabulary.build(c for cs in captions.values() for c in cs)
    attrs = {"encoder": encoder.spec["name"], "checkpoint_sha256": checkpoint_sha256(encoder_path),
             "frame_dim": encoder.frame_dim}
    save_random_captioner(folder / "captioner.pt", vocab, "transformer", encoder.frame_dim, attrs, seed=0)
    return make_bundle(str(encoder_path), str(folder / "captioner.pt"), str(folder / "bundle.pt"), beam_size=2,
                       max_len=12)


@pytest.fixture(scope="session")
def models(bundle_file, index_file) -> dict:
    """The pipeline and the index, loaded once for every app the tests make."""
    return {"pipeline": load_bundle(bundle_file), "index": AudioIndex(index_file)}


@pytest.fixture(scope="session")
def make_client(models):
    """``make_client(**limits)``: a TestClient of an app over both models with those limits."""
    def make(**limits) -> TestClient:
        return TestClient(create_app(models["pipeline"], models["index"], Limits(**limits)))
    return make


@pytest.fixture(scope="session")
def client(make_client) -> TestClient:
    return make_client()


def clip_of(library: Path, kind: str, k: int = 0) -> Path:
    """The library's ``k``-th clip of a kind of sound (low, high, noise, clicks, chirp, pulse)."""
    return next(library.rglob(f"val_{kind}_{k}.wav"))


@pytest.fixture(scope="session")
def two_hours(tmp_path_factory) -> Path:
    """Two hours of digital silence as FLAC: a few hundred kB on disk, 7200 s in its header."""
    path = tmp_path_factory.mktemp("long") / "two_hours.flac"
    block = np.zeros(8000 * 60, dtype=np.int16)
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(120):
            f.write(block)
    return path


@pytest.fixture(scope="session")
def surround_96k(tmp_path_factory) -> Path:
    """Half a second of 6-channel noise at 96 kHz."""
    path = tmp_path_factory.mktemp("surround") / "surround.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal((48000, 6)).astype(np.float32), 96000)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(log: Path, *options: str):
    """``python -m serve *options`` on a free local port, ready (its /health answers); yields (base URL, port)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serve", *options, "--port", str(port), "--threads", "1"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server exited: {log.read_text()}"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /health after 120 s: {log.read_text()}"
            time.sleep(0.25)
        yield base, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
