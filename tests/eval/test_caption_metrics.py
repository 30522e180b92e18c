"""Caption metrics against pycocoevalcap called directly, on 200 clips (real Clotho captions where present) with
mixed candidates."""
import csv
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from eval import _java
from eval.bleu import bleu
from eval.captions import caption_metrics, evaluate_files
from eval.meteor import meteor
from eval.rouge_l import rouge_l
from eval.spice import SPICE_LIB_ENV, spice_unavailable_reason

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def report(parity_set):
    _, cands, refs = parity_set
    # METEOR has its own (slow) test: its jar takes ~15 s to start, twice for a parity check.
    return caption_metrics(cands, refs, metrics=("bleu", "rouge_l", "cider_d", "spice", "spider"))


@pytest.fixture(scope="module")
def reference(parity_set):
    """pycocoevalcap as COCOEvalCap uses it: its PTB tokenizer, then each scorer."""
    _, cands, refs = parity_set
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": c}] for i, c in enumerate(cands)})
    out = {}
    corpus, sents = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"bleu_{n + 1}"] = (corpus[n], sents[n])
    out["rouge_l"] = Rouge().compute_score(gts, res)
    out["cider_d"] = Cider().compute_score(gts, res)
    return out, gts, res


@pytest.mark.parametrize("name", ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"])
def test_equals_pycocoevalcap(report, reference, name):
    corpus, sents = reference[0][name]
    assert report.corpus[name] == pytest.approx(float(corpus), abs=1e-9)
    np.testing.assert_allclose(report.sentence[name], np.asarray(sents, dtype=float), rtol=0, atol=1e-9)
    assert len(report.sentence[name]) == 200


@pytest.mark.slow
def test_meteor_equals_pycocoevalcap(parity_set, reference):
    _, cands, refs = parity_set
    _, gts, res = reference
    scorer = Meteor()
    corpus, sents = scorer.compute_score(gts, res)
    del scorer
    ours_corpus, ours = meteor(cands, refs)
    assert ours_corpus["meteor"] == pytest.approx(corpus, abs=1e-9)
    np.testing.assert_allclose(ours["meteor"], sents, rtol=0, atol=1e-9)
    assert 0.1 < corpus < 1.0
    for i, cand in enumerate(cands):
        if cand.strip(".!? ") == "":
            assert ours["meteor"][i] == 0.0


def test_scores_are_plausible(report, parity_set):
    _, cands, _ = parity_set
    cider = np.asarray(report.sentence["cider_d"])
    held_out, other_clip = cider[0::4], cider[2::4]
    assert held_out.mean() > 3 * other_clip.mean()  # a human caption of the clip beats one of another clip
    for i, cand in enumerate(cands):
        if cand.strip(".!? ") == "":  # empty or punctuation only: computed, and zero
            # (pycocoevalcap's BLEU smoothing leaves values of order 1e-11 instead of exact zeros)
            assert all(report.sentence[m][i] < 1e-9 for m in ("bleu_1", "bleu_4", "rouge_l", "cider_d"))
    assert all(np.isfinite(v).all() for v in report.sentence.values())


def test_spice_and_spider_unavailable_without_corenlp(parity_set, tmp_path, monkeypatch):
    """Both places SPICE looks for CoreNLP are emptied, so this runs where the jars are installed too."""
    monkeypatch.setenv(SPICE_LIB_ENV, str(tmp_path))
    monkeypatch.setattr(importlib.import_module("eval.spice"), "_SPICE_DIR", tmp_path / "pycocoevalcap_spice")
    _, cands, refs = parity_set
    report = caption_metrics(cands[:20], refs[:20], metrics=("cider_d", "spice", "spider"))
    assert list(report.corpus) == ["cider_d"] and list(report.sentence) == ["cider_d"]
    for name in ("spice", "spider"):
        assert "stanford-corenlp-3.6.0-models.jar" in report.unavailable[name]
        assert SPICE_LIB_ENV in report.unavailable[name]
    assert str(tmp_path) in spice_unavailable_reason()


def test_single_metrics_tokenize_themselves(parity_set, report):
    _, cands, refs = parity_set
    assert rouge_l(cands, refs)[1]["rouge_l"] == report.sentence["rouge_l"]
    corpus, _ = bleu(cands[:50], refs[:50], n=2)
    assert set(corpus) == {"bleu_1", "bleu_2"}


@pytest.mark.parametrize("cands, refs, match", [
    ("a dog", [["a dog"]], r"Invalid candidates. \(expected list\[str\], found str\)"),
    ([1], [["a dog"]], r"Invalid candidates. \(expected list\[str\], found list\[int\]\)"),
    (["a"], ["a dog"], r"Invalid mult_references. \(expected list\[list\[str\]\], found str at position 0\)"),
    (["a"], [[]], "at least one reference"),
    (["a", "b"], [["a"]], "as many candidates"),
    ([], [], "at least one candidate"),
])
def test_invalid_input(cands, refs, match):
    with pytest.raises(ValueError, match=match):
        caption_metrics(cands, refs, metrics=("rouge_l",))


def test_unknown_metric_names_valid_ones():
    with pytest.raises(KeyError, match="cider_d"):
        caption_metrics(["a"], [["a"]], metrics=("cider",))


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    _java.java_version.cache_clear()
    try:
        with pytest.raises(_java.JavaError, match="needs Java 8 or newer"):
            caption_metrics(["a dog"], [["a dog barks"]], metrics=("rouge_l",))
    finally:
        _java.java_version.cache_clear()


# ---------------------------------------------------------------- files and command


@pytest.fixture()
def files(tmp_path, parity_set):
    ids, cands, refs = parity_set
    ids, cands, refs = ids[:40], cands[:40], refs[:40]
    preds_json = tmp_path / "preds.json"
    preds_json.write_text(json.dumps([{"audio_id": k, "caption": c} for k, c in zip(ids, cands)]), encoding="utf-8")
    preds_csv = tmp_path / "preds.csv"
    with open(preds_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_predicted"])
        w.writerows(zip(ids, cands))
    refs_json = tmp_path / "refs.json"
    refs_json.write_text(json.dumps(dict(zip(ids, refs))), encoding="utf-8")
    refs_csv = tmp_path / "refs.csv"
    with open(refs_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        w.writerows([k] + rs + [""] * (5 - len(rs)) for k, rs in zip(ids, refs))
    return {"ids": ids, "cands": cands, "refs": refs, "preds_json": preds_json, "preds_csv": preds_csv,
            "refs_json": refs_json, "refs_csv": refs_csv, "tmp": tmp_path}


def test_file_formats_agree_and_match_direct_call(files):
    direct = caption_metrics(files["cands"], files["refs"], metrics=("cider_d", "rouge_l"))
    out = files["tmp"] / "scores" / "out.json"
    results = [evaluate_files(files[p], files[r], metrics="cider_d,rouge_l", out=out if p == "preds_json" else None)
               for p in ("preds_json", "preds_csv") for r in ("refs_json", "refs_csv")]
    for result in results:
        assert result["corpus"] == direct.corpus
        assert [result["per_clip"][k]["cider_d"] for k in files["ids"]] == direct.sentence["cider_d"]
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["corpus"] == direct.corpus and set(written) == {"corpus", "per_clip", "unavailable", "models"}


def test_mismatched_ids_are_named(files):
    data = json.loads(files["preds_json"].read_text(encoding="utf-8"))
    data[0]["audio_id"] = "not_a_clip.wav"
    bad = files["tmp"] / "bad.json"
    bad.write_text(json.dumps(data[1:] + [data[0]]), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        evaluate_files(bad, files["refs_json"], metrics="rouge_l")
    assert "not_a_clip.wav" in str(err.value) and files["ids"][0] in str(err.value)


def test_command_line(files):
    out = files["tmp"] / "cli.json"
    proc = subprocess.run([sys.executable, "-m", "eval.captions", "--predictions", str(files["preds_csv"]),
                           "--references", str(files["refs_csv"]), "--out", str(out),
                           "--metrics", "bleu,rouge_l,cider_d,spider,sbert_sim,fense"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "AAC_FENSE_ECHECKER"})
    assert proc.returncode == 0, proc.stderr
    assert "cider_d" in proc.stdout and "bleu_4" in proc.stdout
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["per_clip"]) == set(files["ids"])
    if spice_unavailable_reason() is not None:
        assert "spider" in result["unavailable"] and "n/a" in proc.stdout
    # the semantic metrics: SBERT-sim names its model; FENSE without its error checker says what to get
    assert result["models"] == {"sbert_sim": "all-MiniLM-L6-v2 (packaged)"} and "sbert_sim" in proc.stdout
    assert 0 < result["corpus"]["sbert_sim"] < 1 and "echecker_clotho_audiocaps_base" in result["unavailable"]["fense"]
    help_proc = subprocess.run([sys.executable, "-m", "eval.captions", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=120, env={**os.environ, "PAGER": "cat"})
    assert help_proc.returncode == 0
    assert "PREDICTIONS" in help_proc.stdout + help_proc.stderr and "--corenlp_dir" in help_proc.stdout + help_proc.stderr
    assert "RuntimeWarning" not in help_proc.stderr


def test_several_systems_in_one_process_score_as_one_by_one(files):
    """--predictions A,B: METEOR's Java and the sentence model are started once and the references embedded once;
    every score equals that of the file scored alone."""
    data = json.loads(files["preds_json"].read_text(encoding="utf-8"))
    other = files["tmp"] / "other.json"
    other.write_text(json.dumps([{**d, "caption": "a sound is heard"} for d in data]), encoding="utf-8")
    outs = [files["tmp"] / "multi_a.json", files["tmp"] / "multi_b.json"]
    metrics = "bleu,meteor,cider_d,sbert_sim"
    proc = subprocess.run([sys.executable, "-m", "eval.captions", "--predictions", f"{files['preds_json']},{other}",
                           "--references", str(files["refs_json"]), "--out", f"{outs[0]},{outs[1]}",
                           "--metrics", metrics], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert str(other) in proc.stdout
    for predictions, out in zip((files["preds_json"], other), outs):
        alone = evaluate_files(predictions, files["refs_json"], metrics=metrics)
        together = json.loads(out.read_text(encoding="utf-8"))
        assert together["corpus"] == pytest.approx(alone["corpus"], abs=1e-6)
    cider = [json.loads(out.read_text())["corpus"]["cider_d"] for out in outs]
    assert cider[0] > cider[1]
    bad = subprocess.run([sys.executable, "-m", "eval.captions", "--predictions", f"{other},{files['tmp']}/gone.json",
                          "--references", str(files["refs_json"]), "--out", str(outs[0])], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "gone.json: no such predictions file" in bad.stderr
    empty = subprocess.run([sys.executable, "-m", "eval.captions", "--predictions", f"{other},,{other}",
                            "--references", str(files["refs_json"])], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert empty.returncode != 0 and "Invalid predictions" in empty.stderr
