"""captioning.decode: the length normalisation chosen on the validation split (never the evaluation one), and
recorded beside the predictions."""
from __future__ import annotations

import json

import pytest

from captioning.decode import LENGTH_NORMS, decode, decoding_record_path
from captioning.vocab import Vocabulary
from tests.captioning.conftest import FRAME_DIM, save_random_captioner, write_split


def test_auto_length_norm_is_chosen_on_validation_and_recorded(tmp_path):
    val, val_caps = write_split(tmp_path, "val", 6, seed=2)
    test, test_caps = write_split(tmp_path, "test", 5, seed=3)
    vocab = Vocabulary.build(c for caps in json.loads(val_caps.read_text()).values() for c in caps)
    attrs = {"encoder": "toy", "checkpoint_sha256": "", "frame_dim": FRAME_DIM}
    model = save_random_captioner(tmp_path / "model.pt", vocab, "gru", FRAME_DIM, attrs, seed=0)
    out = tmp_path / "decode" / "predictions.json"
    result = decode(str(model), str(test), str(out), beam_size=3, max_len=8, length_norm="auto",
                    val_features=str(val), val_references=str(val_caps), references=str(test_caps))
    record = json.loads(decoding_record_path(out).read_text())
    tried = {row["length_norm"]: row["cider_d"] for row in record["validation_cider_d"]}
    assert {row["rerank_weight"] for row in record["validation_cider_d"]} == {0.0}  # no re-ranker: no weight
    assert sorted(tried) == sorted(LENGTH_NORMS) and record["chosen_on"] == str(val)
    best = max(tried.values())
    assert record["length_norm"] == result["length_norm"] == min(a for a, c in tried.items() if c == best)
    assert len(json.loads(out.read_text())) == 5 and result["cider_d"] is not None
    fixed = decode(str(model), str(test), str(tmp_path / "fixed.json"), beam_size=3, max_len=8, length_norm=1.0)
    assert fixed["length_norm"] == 1.0 and json.loads(decoding_record_path(tmp_path / "fixed.json").read_text())[
        "length_norm"] == 1.0


def test_auto_length_norm_needs_a_validation_split(tmp_path):
    with pytest.raises(ValueError, match="--length_norm auto chooses on the validation split"):
        decode("model.pt", "test.h5", str(tmp_path / "p.json"), length_norm="auto")


def test_validation_references_must_cover_the_validation_store(tmp_path):
    val, val_caps = write_split(tmp_path, "val", 4, seed=2)
    vocab = Vocabulary.build(c for caps in json.loads(val_caps.read_text()).values() for c in caps)
    attrs = {"encoder": "toy", "checkpoint_sha256": "", "frame_dim": FRAME_DIM}
    model = save_random_captioner(tmp_path / "model.pt", vocab, "gru", FRAME_DIM, attrs, seed=0)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(dict(list(json.loads(val_caps.read_text()).items())[:3])))
    with pytest.raises(ValueError, match=r"partial\.json: no references for 1 clip\(s\) of .*val\.h5"):
        decode(str(model), str(val), str(tmp_path / "p.json"), length_norm="auto", val_features=str(val),
               val_references=str(partial))
    assert not (tmp_path / "p.json").exists()
