"""One bad audio file never stops an index build or a search: a FLAC whose header states no length is read through
and indexed like its original, a corrupt file is reported by name and skipped, and the other files are processed.

The model is random (a narrow CNN6 and a frozen MiniLM, as in test_search's windowing test): only reading is tested.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common import save_checkpoint
from retrieval.index import build, read_index, update
from retrieval.model import build_model
from retrieval.search import search_audio, search_text
from tests.features.test_audio import flac_stating_length

RATE = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    args = {"audio_encoder": {"name": "cnn6", "width": 0.125, "sample_rate": RATE},
            "text_encoder": {"name": "minilm", "freeze_layers": -1}, "embed_dim": 32}
    torch.manual_seed(0)
    best = tmp_path_factory.mktemp("random_model") / "best.pt"
    save_checkpoint({"kind": "retrieval", "model_args": args, "state_dict": build_model(args).state_dict()}, best)
    return best


@pytest.fixture()
def library(tmp_path) -> Path:
    """Three good WAVs, a FLAC and its copy stating no length, a FLAC cut short and a text file named .wav."""
    folder = tmp_path / "library"
    folder.mkdir()
    t = np.arange(RATE) / RATE
    for i, freq in enumerate((200, 900, 2500)):
        sf.write(folder / f"tone_{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE)
    sweep = (0.4 * np.sin(2 * np.pi * (300 + 600 * t) * t)).astype(np.float32)
    sf.write(folder / "sweep.flac", np.stack([sweep, sweep[::-1]], axis=1), RATE, subtype="PCM_16")
    flac_stating_length(folder / "sweep.flac", folder / "sweep_no_length.flac")
    (folder / "cut.flac").write_bytes((folder / "sweep.flac").read_bytes()[:2000])
    (folder / "notes.wav").write_text("not audio\n", encoding="utf-8")
    return folder


def test_index_build_reads_the_flac_without_length_and_skips_the_corrupt_files(checkpoint, library, tmp_path,
                                                                                capsys):
    index = tmp_path / "index.h5"
    summary = build(str(library), str(checkpoint), str(index))
    assert (summary["files"], summary["skipped"]) == (5, 2)
    data = read_index(index)
    assert data["paths"] == ["sweep.flac", "sweep_no_length.flac", "tone_0.wav", "tone_1.wav", "tone_2.wav"]
    assert data["skipped"]["cut.flac"][2].startswith("corrupt data")
    assert data["skipped"]["notes.wav"][2].startswith("not a readable audio file")
    emb = data["embeddings"][0]
    np.testing.assert_array_equal(emb[0], emb[1])  # the same samples as the original, the same embedding
    out = capsys.readouterr().out
    assert "skipped cut.flac: corrupt data" in out and "skipped notes.wav: not a readable audio file" in out
    assert update(str(index))["embedded"] == 0  # nothing left over: an update is not stuck on either file


def test_search_reads_the_flac_without_length_and_skips_the_corrupt_files(checkpoint, library):
    result = search_text(str(checkpoint), str(library), "a rising tone", top=10)
    assert sorted(r[0] for r in result["results"]) == ["sweep.flac", "sweep_no_length.flac", "tone_0.wav",
                                                      "tone_1.wav", "tone_2.wav"]
    scores = dict(result["results"])
    assert scores["sweep.flac"] == scores["sweep_no_length.flac"]
    assert sorted(s.split(": ")[0] for s in result["skipped"]) == [str(library / "cut.flac"),
                                                                   str(library / "notes.wav")]
    ranked = dict(search_audio(str(checkpoint), str(library / "sweep_no_length.flac"), "a rising tone,a low hum")
                  ["results"])
    assert ranked["a rising tone"] == pytest.approx(scores["sweep_no_length.flac"], abs=1e-5)
