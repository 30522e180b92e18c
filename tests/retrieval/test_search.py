"""Text-to-audio and audio-to-text search and zero-shot classification with the model trained on the tiny corpus."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from common import save_checkpoint
from features.extract import extract
from features.manifest import AudioEntry, Manifest, read_manifest, write_manifest
from features.store import open_store
from features.weights import CHUNK_SECONDS, save_audio_encoder
from retrieval.embed import text_embeddings
from retrieval.model import build_model
from common.io import read_csv
from retrieval.search import rank, search_audio, search_text
from retrieval.zeroshot import zero_shot, zero_shot_folds

REPO = Path(__file__).resolve().parents[2]
LABELS = {"low": "low hum", "high": "high pitched beep", "noise": "hissing noise", "clicks": "rapid clicks",
          "chirp": "rising siren", "pulse": "repeated beeps"}


@pytest.mark.slow
def test_text_search_ranks_matching_sounds_first(trained, tiny_corpus):
    result = search_text(str(trained / "best.pt"), str(tiny_corpus["val"]), "static hisses loudly", top=18)
    ids = [audio_id for audio_id, _ in result["results"]]
    scores = [score for _, score in result["results"]]
    assert sorted(ids) == sorted(read_manifest(tiny_corpus["val"]).ids) and scores == sorted(scores, reverse=True)
    noise_ranks = [rank for rank, audio_id in enumerate(ids) if "_noise_" in audio_id]
    assert sum(noise_ranks) / 3 < (18 - 1) / 2  # better than the mean rank of a random order


@pytest.mark.slow
def test_audio_search_and_unreadable_files_are_skipped(trained, tiny_corpus, tmp_path):
    val = read_manifest(tiny_corpus["val"])
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(val.entry("val_high_0").path, folder / "sub" / "beep.wav")
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    result = search_text(str(trained / "best.pt"), str(folder), "a beep")
    assert [r[0] for r in result["results"]] == ["sub/beep.wav"]
    assert len(result["skipped"]) == 1 and "broken.wav" in result["skipped"][0]

    captions = search_audio(str(trained / "best.pt"), str(folder / "sub" / "beep.wav"), str(tiny_corpus["val"]),
                            top=54)
    assert len(captions["results"]) == 54  # every caption of the split, ranked
    lines = tmp_path / "captions.txt"
    lines.write_text("a sharp high tone\nwhite noise rushes\n", encoding="utf-8")
    two = search_audio(str(trained / "best.pt"), str(folder / "sub" / "beep.wav"), str(lines))
    assert {c for c, _ in two["results"]} == {"a sharp high tone", "white noise rushes"}


@pytest.mark.slow
def test_zero_shot_classification_beats_chance(trained, tiny_corpus, tmp_path):
    val = read_manifest(tiny_corpus["val"])
    val.labels = {i: [LABELS[i.split("_")[1]]] for i in val.ids}
    split = write_manifest(val, tmp_path / "labelled")
    out = tmp_path / "zero_shot"
    result = zero_shot(str(trained / "best.pt"), str(split), prompt="{label}", out=str(out))
    assert result["labels"] == sorted(LABELS.values())  # the split's own labels are the candidates
    scores = result["scores"]
    assert scores["corpus"]["n"] == 18 and scores["corpus"]["chance"] == pytest.approx(1 / 6)
    assert scores["corpus"]["top1"] > 2 / 6
    for p in result["predictions"]:
        assert sorted(p["labels"]) == result["labels"] and p["scores"] == sorted(p["scores"], reverse=True)
    assert json.loads((out / "scores.json").read_text())["corpus"] == scores["corpus"]
    assert (out / "confusion.png").is_file() and len(json.loads((out / "predictions.json").read_text())) == 18
    two = zero_shot(f"{trained / 'best.pt'},{trained / 'best.pt'}", str(split), prompt="{label}")
    assert two["predictions"] == result["predictions"]  # an ensemble of one model twice is that model
    # a corpus prepared as folds (ESC-50's layout after corpus.prepare): each fold scored, then the mean
    corpus = tmp_path / "folds"
    for k, ids in enumerate([val.ids[:6], val.ids[6:]], start=1):
        fold = Manifest(f"fold{k}", [val.entry(i) for i in ids], {}, labels={i: val.labels[i] for i in ids})
        write_manifest(fold, corpus)
    folds = zero_shot_folds(str(trained / "best.pt"), str(corpus), prompt="{label}", out=str(tmp_path / "zs_folds"))
    assert list(folds["folds"]) == ["fold1", "fold2"] and folds["labels"] == result["labels"]
    by_clip = {p["audio_id"]: p["labels"] for p in result["predictions"]}
    top1 = []
    for name, fold in folds["folds"].items():
        assert all(by_clip[p["audio_id"]] == p["labels"] for p in fold["predictions"])  # as the whole split ranks
        top1.append(fold["scores"]["corpus"]["top1"])
    assert folds["mean"]["top1"]["mean"] == pytest.approx(np.mean(top1))
    assert json.loads((tmp_path / "zs_folds" / "folds.json").read_text())["mean"] == folds["mean"]
    with pytest.raises(ValueError, match="prompt"):
        zero_shot(str(trained / "best.pt"), str(split), "a,b", prompt="no slot")
    with pytest.raises(ValueError, match="no labels.json, so --labels"):
        zero_shot(str(trained / "best.pt"), str(tiny_corpus["val"]))
    with pytest.raises(ValueError, match=r"true label\(s\) \['hissing noise'\] are not among"):
        zero_shot(str(trained / "best.pt"), str(split), "low hum,high pitched beep", prompt="{label}")


def test_long_clip_is_windowed_as_extraction_windows_it(tmp_path):
    """Search embeds a 25-s clip from the clip embedding feature extraction stores for it (10-s windows), not from
    one whole-clip pass."""
    rate, seconds = 16000, 25.0
    args = {"audio_encoder": {"name": "cnn6", "width": 0.125, "sample_rate": rate},
            "text_encoder": {"name": "minilm", "freeze_layers": -1}, "embed_dim": 32}
    torch.manual_seed(0)
    model = build_model(args).eval()
    best = tmp_path / "exp" / "best.pt"
    save_checkpoint({"kind": "retrieval", "model_args": args, "state_dict": model.state_dict()}, best)
    save_audio_encoder(model.audio_encoder, best.parent / "audio_encoder.pt")  # as retrieval.train does
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "long.wav", wave, rate, subtype="FLOAT")
    split = write_manifest(Manifest("one", [AudioEntry("long", str(folder / "long.wav"), seconds, rate, 1)], {}),
                           tmp_path / "manifest")
    store = open_store(extract(str(split), str(best.parent / "audio_encoder.pt"), str(tmp_path / "one.h5"),
                               workers=0, progress=False))
    assert json.loads(store.attrs["encoder_spec"])["chunk_seconds"] == CHUNK_SECONDS < seconds

    query = "a tone rises slowly"
    score = search_text(str(best), str(folder), query)["results"][0][1]
    with torch.no_grad():
        text = text_embeddings(model, [query])[0]  # (E,)
        windowed = F.normalize(model.audio_proj(torch.from_numpy(store.clip("long"))), dim=-1)  # (E,)
        whole = model.embed_audio(torch.from_numpy(wave)[None])[0]  # the unwindowed encoder: one 25-s pass
    assert score == pytest.approx(float(text @ windowed), abs=2e-6)  # float32 rounding
    assert abs(score - float(text @ whole)) > 5e-5 and (windowed - whole).abs().max() > 1e-3, \
        "windowing should change a 25-s clip's embedding"


@pytest.mark.slow
def test_rank_writes_the_dcase_retrieval_submission(trained, tiny_corpus, tmp_path):
    val = read_manifest(tiny_corpus["val"])
    folder = tmp_path / "retrieval_audio"  # the DCASE evaluation layout: a flat folder of clips, a captions CSV
    folder.mkdir()
    for entry in val.audio:
        shutil.copy(entry.path, folder / f"{entry.audio_id}.wav")
    queries = tmp_path / "retrieval_captions.csv"
    queries.write_text("\ufeffcaption\nstatic hisses loudly\n\"a beep, high\"\nstatic hisses loudly\n",
                       encoding="utf-8")
    out = tmp_path / "submission.csv"
    result = rank(str(trained / "best.pt"), str(folder), str(queries), str(out))
    assert result["queries"] == 2 and result["clips"] == 18
    rows = read_csv(out)
    assert rows.header == ["caption"] + [f"fname_{k}" for k in range(1, 11)]
    assert [r["caption"] for r in rows] == ["static hisses loudly", "a beep, high"]  # repeated query: one row
    names = [[r[f"fname_{k}"] for k in range(1, 11)] for r in rows]
    assert all(len(set(n)) == 10 and set(n) <= {f"{e.audio_id}.wav" for e in val.audio} for n in names)
    top = search_text(str(trained / "best.pt"), str(folder), "static hisses loudly")
    assert names[0] == [audio_id for audio_id, _ in top["results"]]  # the same ranking as a single search

    queries.write_text("text\nstatic\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"retrieval_captions.csv: missing columns \['caption'\]"):
        rank(str(trained / "best.pt"), str(folder), str(queries), str(out))
    queries.write_text("caption,note\nstatic,a\n,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="retrieval_captions.csv, line 3: an empty caption"):
        rank(str(trained / "best.pt"), str(folder), str(queries), str(out))
    few = tmp_path / "few"
    few.mkdir()
    for entry in val.audio[:4]:
        shutil.copy(entry.path, few / f"{entry.audio_id}.wav")
    lines = tmp_path / "queries.txt"
    lines.write_text("static hisses loudly\n", encoding="utf-8")
    with pytest.raises(ValueError, match="4 clips to rank, a submission names 10"):
        rank(str(trained / "best.pt"), str(few), str(lines), str(out))


def test_cli_help_explains_commands():
    for module in ("retrieval.train", "retrieval.evaluate", "retrieval.search"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                              env={"PAGER": "cat", "PATH": "/usr/bin:/bin"}, timeout=120)
        text = done.stdout + done.stderr  # fire shows help on stderr when not on a terminal
        assert done.returncode == 0 and len(text) > 200, module
    assert "crop_seconds" in subprocess.run([sys.executable, "-m", "retrieval.train", "--help"], cwd=REPO,
                                            capture_output=True, text=True, timeout=120).stdout
