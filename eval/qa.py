"""Audio question answering: the ``qa.json`` file, answer normalisation, accuracy by question type and a majority
baseline. Run ``python -m eval.qa --predictions P.json --qa DIR [--train_qa TRAIN_DIR] [--out scores.json]``.

``qa.json`` sits beside a split's manifest (``python -m corpus.prepare synth`` writes it; see
:mod:`corpus.synth.questions` for the question types and their answers)::

    {"<audio_id>": [{"question": "Is there a dog barking?", "answer": "yes", "type": "presence"}, ...], ...}

Predictions are a JSON list with one ``{"audio_id", "question", "answer"}`` per question, matched to ``qa.json`` by
audio id and question text (as a captioner's ``[{"audio_id", "caption"}]`` is matched by audio id); other keys are
ignored. An answer is right when it equals the truth after :func:`normalise_answer`, so "The dog." is "dog".
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from common.io import write_text_atomic

QA_JSON = "qa.json"
FIELDS = ("question", "answer", "type")
NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
                "7": "seven", "8": "eight", "9": "nine", "10": "ten", "once": "one", "twice": "two", "thrice": "three"}
PRINTED_CONFUSION = 5  # confusion tables are printed for types with at most this many true answers

QA = dict[str, list[dict[str, str]]]
Predictions = Mapping[tuple[str, str], str]  # (audio_id, question) -> answer


def normalise_answer(text: str) -> str:
    """Lower case, single spaces, no final punctuation, no leading article; a lone number (``3``, ``twice``) as its
    word (``three``, ``two``): the differences a language model's answer may show without being wrong."""
    text = " ".join(text.lower().split()).rstrip(".!?,;: ")
    for article in ("a ", "an ", "the "):
        if text.startswith(article):
            text = text[len(article):]
            break
    return NUMBER_WORDS.get(text, text)


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({err}); expected {what}") from None


def read_qa(path: str | os.PathLike) -> QA:
    """``{audio_id: [{"question", "answer", "type"}, ...]}`` from a ``qa.json`` file or the split folder holding it,
    checked: every field a non-empty string, no question twice for one clip."""
    path = Path(path)
    file = path / QA_JSON if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{file}: missing; `python -m corpus.prepare synth --root DIR --out OUT` writes qa.json "
                         f"into each split folder of the synthetic corpus")
    data = _read_json(file, "{audio_id: [{question, answer, type}, ...]}")
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected an object {{audio_id: [{{question, answer, type}}, ...]}}, "
                         f"found {type(data).__name__}")
    out: QA = {}
    for audio_id, items in data.items():
        if not isinstance(items, list):
            raise ValueError(f"{file}: audio id {audio_id!r}: expected a list of {{question, answer, type}}, found "
                             f"{type(items).__name__}")
        seen = set()
        for k, item in enumerate(items):
            for name in FIELDS:
                value = item.get(name) if isinstance(item, dict) else None
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{file}: audio id {audio_id!r}, question {k}: {name!r} must be a non-empty "
                                     f"string, found {value!r}")
            if item["question"] in seen:
                raise ValueError(f"{file}: audio id {audio_id!r}, question {k}: {item['question']!r} is asked twice")
            seen.add(item["question"])
        out[audio_id] = [{name: item[name] for name in FIELDS} for item in items]
    return out


def load_answers(path: str | os.PathLike) -> dict[tuple[str, str], str]:
    """``{(audio_id, question): answer}`` from a predictions file ``[{"audio_id", "question", "answer"}, ...]``."""
    path = Path(path)
    what = 'a list of {"audio_id", "question", "answer"} objects'
    if not path.is_file():
        raise ValueError(f"{path}: predictions file not found (expected {what})")
    data = _read_json(path, what)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected {what}, found {type(data).__name__}")
    out: dict[tuple[str, str], str] = {}
    for k, row in enumerate(data):
        for name in ("audio_id", "question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(name), str):
                found = row.get(name) if isinstance(row, dict) else row
                raise ValueError(f"{path}: entry {k}: {name!r} must be a string, found {found!r}")
        key = (row["audio_id"], row["question"])
        if key in out:
            raise ValueError(f"{path}: entry {k}: audio id {key[0]!r} has {key[1]!r} answered twice")
        out[key] = row["answer"]
    return out


def _check_coverage(predictions: Predictions, qa: QA) -> list[tuple[tuple[str, str], dict]]:
    """(key, qa item) of every question, in qa order; ValueError unless predictions answer exactly these."""
    items = [((audio_id, q["question"]), q) for audio_id, qs in qa.items() for q in qs]
    if not items:
        raise ValueError("Invalid qa. (expected at least one question, found none)")
    keys = {key for key, _ in items}
    missing = [key for key, _ in items if key not in predictions]
    extra = [key for key in predictions if key not in keys]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} question(s) have no predicted answer, e.g. {missing[:3]}")
        if extra:
            parts.append(f"{len(extra)} predicted answer(s) match no question, e.g. {extra[:3]}")
        raise ValueError("Predictions and questions do not match (by audio id and question text): " + "; ".join(parts))
    return items


def score_answers(predictions: Predictions, qa: QA) -> dict:
    """Exact-match accuracy of ``predictions`` ({(audio_id, question): answer}, one per question of ``qa``).

    Returns ``{"accuracy", "n", "by_type": {type: {"accuracy", "n", "correct"}}, "confusion": {type: {truth:
    {predicted: count}}}, "correct": [0 or 1 per question, in qa order]}``, answers normalised
    (:func:`normalise_answer`); types sorted by name. Two systems' ``correct`` lists (overall, or of one type) pair
    up question by question (a paired bootstrap: :func:`eval.compare.paired_bootstrap`).
    """
    right: list[int] = []
    by_type: dict[str, list[int]] = {}
    confusion: dict[str, dict[str, Counter[str]]] = {}
    for key, q in _check_coverage(predictions, qa):
        truth, predicted = normalise_answer(q["answer"]), normalise_answer(predictions[key])
        right.append(int(truth == predicted))
        by_type.setdefault(q["type"], []).append(right[-1])
        confusion.setdefault(q["type"], {}).setdefault(truth, Counter())[predicted] += 1
    return {"accuracy": sum(right) / len(right), "n": len(right),
            "by_type": {t: {"accuracy": sum(c) / len(c), "n": len(c), "correct": c}
                        for t, c in sorted(by_type.items())},
            "confusion": {t: {truth: dict(sorted(row.items())) for truth, row in sorted(confusion[t].items())}
                          for t in sorted(confusion)}, "correct": right}


def _most_common(counts: Counter[str]) -> str:
    return min(counts, key=lambda answer: (-counts[answer], answer))  # ties: alphabetically first, deterministic


def majority_baseline(train_qa: QA, test_qa: QA) -> dict:
    """Scores of always giving, per question type, the most frequent (normalised) training answer of that type (the
    most frequent answer overall for a type training lacks): what a model that ignores the audio can reach.

    Returns the dict of :func:`score_answers` plus ``"answers": {type: the answer given}``.
    """
    by_type: dict[str, Counter[str]] = {}
    for qs in train_qa.values():
        for q in qs:
            by_type.setdefault(q["type"], Counter())[normalise_answer(q["answer"])] += 1
    if not by_type:
        raise ValueError("Invalid train_qa. (expected at least one question, found none)")
    fallback = _most_common(sum(by_type.values(), Counter()))
    answers = {t: _most_common(by_type[t]) if t in by_type else fallback
               for t in sorted({q["type"] for qs in test_qa.values() for q in qs})}
    predictions = {(audio_id, q["question"]): answers[q["type"]] for audio_id, qs in test_qa.items() for q in qs}
    return {**score_answers(predictions, test_qa), "answers": answers}


def format_scores(scores: dict, baseline: dict | None = None) -> str:
    """Accuracy overall and per type (beside the baseline's, if given), then the small confusion tables."""
    def row(name: str, s: dict, b: dict | None) -> str:
        return f"{name:<18} {s['n']:>6} {s['accuracy']:>9.4f}" + (f" {b['accuracy']:>9.4f}" if b else "")

    lines = [f"{'type':<18} {'n':>6} {'accuracy':>9}" + (f" {'baseline':>9}" if baseline else "")]
    lines.append(row("all", scores, baseline))
    for t, s in scores["by_type"].items():
        lines.append(row(t, s, baseline["by_type"][t] if baseline else None))
    if baseline:
        lines.append("baseline answers: " + ", ".join(f"{t} -> {a}" for t, a in baseline["answers"].items()))
    for t, table in scores["confusion"].items():
        if len(table) > PRINTED_CONFUSION:
            continue
        labels = list(table)
        lines.append(f"\n{t}: true answer (rows) by predicted answer (columns; 'other': anything else)")
        lines.append(" " * 10 + "".join(f"{label:>10}" for label in labels + ["other"]))
        for truth, row in table.items():
            other = sum(c for p, c in row.items() if p not in table)
            lines.append(f"{truth:<10}" + "".join(f"{row.get(p, 0):>10}" for p in labels) + f"{other:>10}")
    return "\n".join(lines)


def main(predictions: str, qa: str, train_qa: str | None = None, out: str | None = None) -> None:
    """Score answers to audio questions: exact-match accuracy overall and per question type.

    Args:
        predictions: JSON list of {"audio_id", "question", "answer"}, one per question of qa.
        qa: the questions: a qa.json file or the split folder holding it.
        train_qa: the training split's qa.json (or folder): also report the majority baseline, which answers
            every question with its type's most frequent training answer.
        out: also write {"scores", "baseline"} as JSON.
    """
    test_qa = read_qa(qa)
    scores = score_answers(load_answers(predictions), test_qa)
    baseline = majority_baseline(read_qa(train_qa), test_qa) if train_qa is not None else None
    if out is not None:
        write_text_atomic(out, json.dumps({"scores": scores, "baseline": baseline}, indent=1) + "\n")
    print(format_scores(scores, baseline))


if __name__ == "__main__":
    from common.cli import run

    run(main, "eval.qa", text_args=("predictions", "qa", "train_qa", "out"))
