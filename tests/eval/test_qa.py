"""Audio question answering scores: normalisation, accuracy by type, confusion, the majority baseline, files, CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.qa import load_answers, majority_baseline, normalise_answer, read_qa, score_answers

REPO = Path(__file__).resolve().parents[2]
DOG, BELL, FIRST, PITCH = ("Is there a dog barking?", "How many times does the bell ring?", "What happens first?",
                           "Is the whistle high or low pitched?")


def q(question: str, answer: str, type_: str) -> dict:
    return {"question": question, "answer": answer, "type": type_}


TEST_QA = {"a.wav": [q(DOG, "yes", "presence"), q(BELL, "three", "count")],
           "b.wav": [q(DOG, "no", "presence"), q(FIRST, "siren", "order"), q(PITCH, "high", "pitch")]}
TRAIN_QA = {"c.wav": [q(DOG, "yes", "presence"), q(BELL, "two", "count")],
            "d.wav": [q(DOG, "yes", "presence"), q(BELL, "three", "count"), q(FIRST, "dog", "order")],
            "e.wav": [q(DOG, "no", "presence")]}


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), ("  The Dog. ", "dog"), ("an engine!", "engine"), ("3", "three"), ("Twice.", "two"),
    ("people  talking", "people talking"), ("several", "several"), ("there", "there"), ("theatre", "theatre"),
    ("a", "a"), ("", ""),
])
def test_normalise_answer(text, expected):
    assert normalise_answer(text) == expected


def test_score_answers_by_type_with_confusion():
    predictions = {("a.wav", DOG): "Yes.", ("a.wav", BELL): "3", ("b.wav", DOG): "yes", ("b.wav", FIRST): "the dog",
                   ("b.wav", PITCH): "High"}
    scores = score_answers(predictions, TEST_QA)
    assert scores["n"] == 5 and scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["by_type"] == {"count": {"accuracy": 1.0, "n": 1, "correct": [1]},
                                 "order": {"accuracy": 0.0, "n": 1, "correct": [0]},
                                 "pitch": {"accuracy": 1.0, "n": 1, "correct": [1]},
                                 "presence": {"accuracy": 0.5, "n": 2, "correct": [1, 0]}}  # each in qa order
    assert scores["confusion"]["presence"] == {"no": {"yes": 1}, "yes": {"yes": 1}}
    assert scores["confusion"]["order"] == {"siren": {"dog": 1}}
    assert scores["correct"] == [1, 1, 0, 0, 1]  # question by question, in qa order


def test_predictions_must_answer_exactly_the_questions():
    full = {(a, item["question"]): item["answer"] for a, items in TEST_QA.items() for item in items}
    assert score_answers(full, TEST_QA)["accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"1 question\(s\) have no predicted answer.*'b.wav', 'What happens first"):
        score_answers({k: v for k, v in full.items() if k != ("b.wav", FIRST)}, TEST_QA)
    with pytest.raises(ValueError, match=r"1 predicted answer\(s\) match no question.*'c.wav'"):
        score_answers({**full, ("c.wav", DOG): "yes"}, TEST_QA)
    with pytest.raises(ValueError, match="at least one question"):
        score_answers({}, {})


def test_majority_baseline_answers_each_type_with_its_most_frequent_training_answer():
    base = majority_baseline(TRAIN_QA, TEST_QA)
    # count: "two" and "three" tie, the alphabetically first wins; pitch is not in training: overall majority "yes"
    assert base["answers"] == {"count": "three", "order": "dog", "pitch": "yes", "presence": "yes"}
    assert base["by_type"]["presence"] == {"accuracy": 0.5, "n": 2, "correct": [1, 0]}
    assert base["by_type"]["count"] == {"accuracy": 1.0, "n": 1, "correct": [1]}
    assert base["accuracy"] == pytest.approx(2 / 5) and base["confusion"]["pitch"] == {"high": {"yes": 1}}
    with pytest.raises(ValueError, match="train_qa"):
        majority_baseline({}, TEST_QA)


def test_read_qa_round_trip_and_clear_errors(tmp_path):
    split = tmp_path / "evaluation"
    split.mkdir()
    with pytest.raises(ValueError, match=r"evaluation/qa.json: missing; .*python -m corpus.prepare synth"):
        read_qa(split)
    (split / "qa.json").write_text(json.dumps(TEST_QA))
    assert read_qa(split) == TEST_QA == read_qa(split / "qa.json")
    bad = [({"a.wav": [{"question": DOG, "answer": 1, "type": "presence"}]}, r"audio id 'a.wav', question 0: 'answer'"),
           ({"a.wav": [{"question": DOG, "answer": "yes"}]}, r"audio id 'a.wav', question 0: 'type'"),
           ({"a.wav": [q(DOG, "yes", "presence"), q(" ", "no", "presence")]}, r"question 1: 'question' must be"),
           ({"a.wav": [q(DOG, "yes", "presence"), q(DOG, "no", "presence")]}, "asked twice"),
           ({"a.wav": q(DOG, "yes", "presence")}, "audio id 'a.wav': expected a list"),
           ([q(DOG, "yes", "presence")], "expected an object")]
    for data, message in bad:
        (split / "qa.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            read_qa(split)
    (split / "qa.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        read_qa(split)


def test_load_answers(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([{"audio_id": "a.wav", "question": DOG, "answer": "yes", "type": "ignored"}]))
    assert load_answers(path) == {("a.wav", DOG): "yes"}
    for data, message in [([{"audio_id": "a.wav", "question": DOG}], "entry 0: 'answer' must be a string"),
                          ([{"audio_id": "a.wav", "question": DOG, "answer": "yes"}] * 2, "entry 1: .* twice"),
                          ({"a.wav": "yes"}, "expected a list")]:
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            load_answers(path)


def test_cli_prints_accuracy_baseline_and_confusion(tmp_path):
    for name, data in [("test", TEST_QA), ("train", TRAIN_QA)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "qa.json").write_text(json.dumps(data))
    rows = [{"audio_id": a, "question": item["question"], "answer": "yes"} for a, items in TEST_QA.items()
            for item in items]
    (tmp_path / "pred.json").write_text(json.dumps(rows))
    command = [sys.executable, "-m", "eval.qa", "--predictions", str(tmp_path / "pred.json"), "--qa",
               str(tmp_path / "test"), "--train_qa", str(tmp_path / "train" / "qa.json"),
               "--out", str(tmp_path / "s.json")]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1].split() == ["all", "5", "0.2000", "0.4000"]  # one "yes" right; the baseline gets two
    assert "presence -> yes" in run.stdout and "true answer (rows)" in run.stdout
    assert json.loads((tmp_path / "s.json").read_text())["baseline"]["answers"]["count"] == "three"
    rows.pop()
    (tmp_path / "pred.json").write_text(json.dumps(rows))
    run = subprocess.run(command[:7], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.startswith("eval.qa: error: Predictions and questions do not match")
    assert len(run.stderr.strip().splitlines()) == 1
