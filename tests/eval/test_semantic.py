"""SBERT-sim, FENSE and SPIDEr-FL against aac-metrics' functional implementations, with the packaged MiniLM and a
small FENSE error checker written in the official checkpoint format."""
from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
import types

import numpy as np
import pytest
import torch

from common.text_encoder import resolve_text_encoder
from eval.captions import caption_metrics
from eval.semantic import ERROR_THRESHOLD, FluencyChecker, sbert_sim
from eval.spice import MetricUnavailableError

CANDIDATES = ["a dog barks twice", "rain falls on a tin roof!", "a a a a", "Birds chirp, and a car passes by.",
              "someone is speaking speaking speaking", "water"]
REFERENCES = [["a dog is barking", "a small dog barks loudly"], ["heavy rain on a metal roof"],
              ["people talk in a crowd", "a crowd murmurs", "voices in a hall"],
              ["birds sing while a car drives past"], ["a man speaks"], ["water flows in a stream", "a brook"]]


@functools.cache
def _aac_metrics():
    """aac-metrics' functional modules, without its package initialiser (which imports msclap and torchaudio)."""
    root = importlib.util.find_spec("aac_metrics").submodule_search_locations[0]
    for name in ("aac_metrics", "aac_metrics.functional", "aac_metrics.utils"):
        package = types.ModuleType(name)
        package.__path__ = [root + name[len("aac_metrics"):].replace(".", "/")]
        sys.modules[name] = package
    from aac_metrics.functional import fense, fer, sbert_sim as aac_sbert

    return aac_sbert, fer, fense


@pytest.fixture(scope="module")
def sentence_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_text_encoder("minilm"), device="cpu")


def test_sbert_sim_by_hand_and_against_aac_metrics(sentence_model):
    corpus, per = sbert_sim(["a dog barks", "a cat"], [["a dog barks", "a dog barks"], ["a cat", "a dog barks"]])
    sents = per["sbert_sim"]
    emb = sentence_model.encode(["a cat", "a dog barks"], normalize_embeddings=True)
    assert sents[0] == pytest.approx(1.0, abs=1e-6)  # identical to both references
    assert sents[1] == pytest.approx((1.0 + float(emb[0] @ emb[1])) / 2, abs=1e-6)  # the mean over references
    assert corpus["sbert_sim"] == pytest.approx(np.mean(sents))

    aac_sbert, _, _ = _aac_metrics()
    theirs = aac_sbert.sbert_sim(CANDIDATES, REFERENCES, sbert_model=sentence_model, device="cpu")
    ours = sbert_sim(CANDIDATES, REFERENCES)
    np.testing.assert_allclose(ours[1]["sbert_sim"], theirs[1]["sbert_sim"].numpy(), atol=1e-5)
    assert ours[0]["sbert_sim"] == pytest.approx(float(theirs[0]["sbert_sim"]), abs=1e-5)


@pytest.fixture(scope="module")
def echecker(tmp_path_factory):
    """An error checker in FENSE's format: {"model_type", "num_classes", "state_dict"} with a small BERT (MiniLM's
    uncased vocabulary) whose "error" output is calibrated so that some captions pass the 0.9 threshold."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("echecker")
    bert_dir = root / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64)).eval()
    bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    head = torch.nn.Linear(32, 6)
    with torch.no_grad():
        batch = tokenizer([c.lower() for c in CANDIDATES], padding=True, return_tensors="pt")
        logits = head(bert(**batch).last_hidden_state[:, 0])[:, -1]
        head.bias[-1] += torch.logit(torch.tensor(ERROR_THRESHOLD)) - logits.median()  # about half are errors
    state = {**{f"encoder.{k}": v for k, v in bert.state_dict().items()},
             **{f"clf.{k}": v for k, v in head.state_dict().items()}}
    path = root / "echecker_tiny.ckpt"
    torch.save({"model_type": str(bert_dir), "num_classes": 6, "state_dict": state}, path)
    return {"path": path, "bert_dir": bert_dir, "state": state, "tokenizer": tokenizer}


def test_fense_and_spider_fl_against_aac_metrics(echecker, sentence_model):
    _, aac_fer, aac_fense = _aac_metrics()
    reference = aac_fer.BERTFlatClassifier(str(echecker["bert_dir"]), num_classes=6)
    reference.load_state_dict(echecker["state"])
    probs = aac_fer.fer(CANDIDATES, echecker=reference.eval(), echecker_tokenizer=echecker["tokenizer"],
                        device="cpu", return_probs=True)[1]["fluency_error.error_prob"].numpy()
    ours = FluencyChecker(echecker["path"]).error_probs(CANDIDATES)
    np.testing.assert_allclose(ours, probs, atol=1e-5)
    flagged = probs > ERROR_THRESHOLD
    assert 0 < flagged.sum() < len(CANDIDATES)  # the penalty is exercised both ways

    report = caption_metrics(CANDIDATES, REFERENCES, metrics=("sbert_sim", "fense", "cider_d"),
                             echecker=echecker["path"])
    theirs = aac_fense.fense(CANDIDATES, REFERENCES, sbert_model=sentence_model, echecker=reference,
                             echecker_tokenizer=echecker["tokenizer"], device="cpu")
    np.testing.assert_allclose(report.sentence["fense"], theirs[1]["fense"].numpy(), atol=1e-5)
    expected = np.array(report.sentence["sbert_sim"]) * np.where(flagged, 0.1, 1.0)  # by hand: x (1 - 0.9)
    np.testing.assert_allclose(report.sentence["fense"], expected, atol=1e-6)
    assert report.models["fense"] == "FENSE error checker echecker_tiny.ckpt"
    assert report.models["sbert_sim"] == "all-MiniLM-L6-v2 (packaged)"


def test_unavailable_and_bad_checkers(echecker, tmp_path, monkeypatch):
    monkeypatch.delenv("AAC_FENSE_ECHECKER", raising=False)
    report = caption_metrics(CANDIDATES, REFERENCES, metrics=("fense",))
    assert "--echecker" in report.unavailable["fense"] and report.corpus == {}
    report = caption_metrics(CANDIDATES, REFERENCES, metrics=("fense",), echecker=tmp_path / "absent.ckpt")
    assert "absent.ckpt: FENSE's fluency-error checker not found" in report.unavailable["fense"]
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.ckpt: not a readable FENSE error checker"):
        FluencyChecker(broken)
    wrong = tmp_path / "wrong.ckpt"
    state = dict(echecker["state"])
    state["clf.weight"] = torch.zeros(6, 48)
    torch.save({"model_type": str(echecker["bert_dir"]), "num_classes": 6, "state_dict": state}, wrong)
    with pytest.raises(ValueError, match="wrong.ckpt: does not fit its model_type"):
        FluencyChecker(wrong)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model_type": str(tmp_path / "no-such-bert"), "num_classes": 6, "state_dict": {}}, foreign)
    with pytest.raises(MetricUnavailableError, match="foreign.ckpt: its BERT is not on this machine"):
        FluencyChecker(foreign)


class Payload:
    """Unpickling an instance would import this module: what loading a checker must never do."""


def test_checker_holding_python_objects_is_refused_by_name(echecker, tmp_path):
    """A checker file holding objects besides data is refused in one line naming it, never with torch's advice to
    load it with weights_only=False; so is the command given it."""
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"model_type": str(echecker["bert_dir"]), "num_classes": 6, "state_dict": echecker["state"],
                "extra": Payload()}, pickled)
    refused = r"pickled\.ckpt: refused: the FENSE error checker holds Python objects \(.*Payload\)"
    with pytest.raises(ValueError, match=refused) as err:
        FluencyChecker(pickled)
    assert "weights_only" not in str(err.value)
    (tmp_path / "preds.json").write_text(json.dumps({"a.wav": "a dog barks"}), encoding="utf-8")
    (tmp_path / "refs.json").write_text(json.dumps({"a.wav": ["a dog is barking"]}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "eval.captions", "--predictions", str(tmp_path / "preds.json"),
                           "--references", str(tmp_path / "refs.json"), "--metrics", "fense", "--echecker",
                           str(pickled)], cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]  # the lines before it: the sentence model's loading bar
    assert error.startswith(f"eval.captions: error: {pickled}: refused: the FENSE error checker holds Python objects")
    assert "weights_only" not in proc.stderr
