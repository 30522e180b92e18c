"""Classification scores from ranked labels: a hand-computed case, multi-label clips, bad input, the command."""
from __future__ import annotations

import json

import pytest

from eval.classification import main, read_predictions, read_truth, score_labels
from eval.compare import compare

LABELS = ["bell", "dog", "rain", "siren", "wind", "bird"]


def ranked(first: str, second: str) -> list[str]:
    return [first, second] + [x for x in LABELS if x not in (first, second)]


TRUTH = {"a": ["dog"], "b": ["dog"], "c": ["rain"], "d": ["bell", "siren"], "e": ["wind"]}
PREDICTED = {"a": ranked("dog", "bell"), "b": ranked("bell", "dog"), "c": ranked("wind", "bell"),
             "d": ranked("siren", "dog"), "e": ranked("wind", "rain")}


def test_hand_computed_case():
    scores = score_labels(PREDICTED, TRUTH)
    # top-1 right: a (dog), d (siren is one of its labels), e (wind); wrong: b (bell), c (wind)
    assert scores["corpus"]["top1"] == pytest.approx(3 / 5)
    # top-5 of 6 candidates: every true label except c's rain (ranked wind, bell, dog, rain... is 4th) -> all right
    assert scores["corpus"]["top5"] == pytest.approx(1.0)
    assert scores["corpus"]["chance"] == pytest.approx((1 + 1 + 1 + 2 + 1) / 6 / 5)
    assert scores["per_clip"]["b"] == {"top1": 0.0, "top5": 1.0}
    # recall: dog ranked first in 1 of 2 dog clips; d holds 2 labels, so its top 2 (siren, dog) count: siren yes,
    # bell no
    assert scores["by_class"] == {"bell": {"recall": 0.0, "n": 1}, "dog": {"recall": 0.5, "n": 2},
                                  "rain": {"recall": 0.0, "n": 1}, "siren": {"recall": 1.0, "n": 1},
                                  "wind": {"recall": 1.0, "n": 1}}
    labels, matrix = scores["confusion"]["labels"], scores["confusion"]["matrix"]
    cell = {(labels[i], labels[j]): n for i, row in enumerate(matrix) for j, n in enumerate(row) if n}
    assert cell == {("dog", "dog"): 1, ("dog", "bell"): 1, ("rain", "wind"): 1, ("wind", "wind"): 1}  # not d


def test_fewer_than_five_candidates_has_no_top5_and_mismatches_are_refused():
    scores = score_labels({"a": ["dog", "cat"]}, {"a": ["cat"]})
    assert scores["corpus"] == {"top1": 0.0, "chance": 0.5, "n": 1}
    with pytest.raises(ValueError, match=r"1 clip\(s\) not predicted"):
        score_labels({"a": ["dog"]}, {"a": ["dog"], "b": ["dog"]})
    with pytest.raises(ValueError, match=r"'a': true label\(s\) \['cow'\] are not among its candidates"):
        score_labels({"a": ["dog", "cat"]}, {"a": ["cow"]})


def test_command_writes_scores_that_compare_reads(tmp_path):
    split = tmp_path / "evaluation"
    split.mkdir()
    (split / "labels.json").write_text(json.dumps(TRUTH))
    files = {}
    for name, preds in [("one", PREDICTED), ("two", {**PREDICTED, "b": ranked("dog", "bell")})]:
        (tmp_path / f"{name}.json").write_text(json.dumps([{"audio_id": i, "labels": p} for i, p in preds.items()]))
        files[name] = tmp_path / f"{name}_scores.json"
        main(str(tmp_path / f"{name}.json"), str(split), out=str(files[name]), confusion=str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    result = compare(str(files["one"]), str(files["two"]), "top1")["top1"]
    assert result["difference"] == pytest.approx(1 / 5) and result["clips"] == 5


@pytest.mark.parametrize("content, message", [
    ('{"a": []}', "expected a non-empty list of labels"), ('{"a": ["dog", ""]}', "non-empty list of labels"),
    ("[1]", "expected a non-empty object"), ("{", "not valid UTF-8 JSON")])
def test_bad_truth_files_are_named(tmp_path, content, message):
    (tmp_path / "labels.json").write_text(content)
    with pytest.raises(ValueError, match=f"labels.json: .*{message}"):
        read_truth(tmp_path)
    with pytest.raises(ValueError, match="absent.*missing"):
        read_truth(tmp_path / "absent")


def test_bad_prediction_files_are_named(tmp_path):
    path = tmp_path / "p.json"
    for content, message in [('[{"audio_id": "a"}]', "entry 0: expected"), ('{"a": 1}', "expected a list"),
                             ('[{"audio_id": "a", "labels": ["x"]}, {"audio_id": "a", "labels": ["x"]}]',
                              "entry 1: audio id 'a' is predicted twice")]:
        path.write_text(content)
        with pytest.raises(ValueError, match=f"p.json: {message}"):
            read_predictions(path)
