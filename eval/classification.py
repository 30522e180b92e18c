"""Classification scores from ranked labels: top-1 and top-5 accuracy, recall per class, a confusion matrix.

    python -m eval.classification --predictions P.json --truth SPLIT_OR_LABELS_JSON [--out scores.json] \
        [--confusion confusion.png]

Predictions are a JSON list with one ``{"audio_id", "labels": [label, ...]}`` per clip, its candidate labels best
first (other keys, e.g. ``"scores"``, are ignored); ``python -m retrieval.zeroshot`` (zero-shot by retrieval) and
``python -m captioning.classify`` (a prefix-LM's likelihood of each label) write them. The truth is a split's
``labels.json`` (``{audio_id: [label, ...]}``).

A clip may hold several labels (a synthetic scene's sound types, FSD50K's tags): it is right at k when any of its
labels is among the first k predicted. Chance is what a random ranking scores at top-1 (the mean share of labels a
clip holds). The recall of a class is the share of its clips that rank it within their number of true labels (top-1
for a single-label clip). The confusion matrix (true label by top-1 prediction) counts single-label clips only,
since a multi-label clip has no single true row. Top-1 and top-5 are means over clips, so
``python -m eval.compare --metrics top1`` compares two systems' score files clip by clip.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.io import atomic_write, write_text_atomic

LABELS_JSON = "labels.json"
TOP_K = (1, 5)


def _read_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise ValueError(f"{path}: missing (expected {what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({err}); expected {what}") from None


def read_truth(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{audio_id: [label, ...]}`` from a ``labels.json`` file or the split folder holding it; every clip with at
    least one non-empty label."""
    path = Path(path)
    file = path / LABELS_JSON if path.is_dir() else path
    data = _read_json(file, "{audio_id: [label, ...]}; corpus preparation writes labels.json for labelled corpora")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{file}: expected a non-empty object {{audio_id: [label, ...]}}")
    for audio_id, labels in data.items():
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
            raise ValueError(f"{file}: audio id {audio_id!r}: expected a non-empty list of labels, found {labels!r}")
    return data


def read_predictions(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{audio_id: ranked labels}`` from ``[{"audio_id", "labels": [...]}, ...]``."""
    path = Path(path)
    what = 'a list of {"audio_id", "labels": [label, ...]} objects, labels best first'
    data = _read_json(path, what)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected {what}, found {type(data).__name__}")
    out: dict[str, list[str]] = {}
    for k, row in enumerate(data):
        audio_id, labels = (row.get("audio_id"), row.get("labels")) if isinstance(row, dict) else (None, None)
        if not isinstance(audio_id, str) or not isinstance(labels, list) or not labels or not all(
                isinstance(x, str) for x in labels):
            raise ValueError(f"{path}: entry {k}: expected {{'audio_id': str, 'labels': [str, ...]}}, found {row!r}")
        if audio_id in out:
            raise ValueError(f"{path}: entry {k}: audio id {audio_id!r} is predicted twice")
        out[audio_id] = labels
    return out


def score_labels(predictions: Mapping[str, Sequence[str]], truth: Mapping[str, Sequence[str]]) -> dict:
    """Scores of ranked ``predictions`` against ``truth`` (both ``{audio_id: labels}``, the same clips).

    Returns ``{"corpus": {"top1", "top5", "chance", "n"}, "per_clip": {id: {"top1", "top5"}}, "by_class": {label:
    {"recall", "n"}}, "confusion": {"labels": [...], "matrix": [[...]]}}``; top-5 is absent with fewer than 5
    candidates. Raises ValueError if the clips differ or a true label is not among a clip's candidates.
    """
    missing, extra = sorted(set(truth) - set(predictions)), sorted(set(predictions) - set(truth))
    if missing or extra:
        raise ValueError(f"Predictions and truth do not match: {len(missing)} clip(s) not predicted (e.g. "
                         f"{missing[:3]}), {len(extra)} predicted clip(s) without labels (e.g. {extra[:3]})")
    if not truth:
        raise ValueError("Invalid truth. (expected at least one labelled clip, found none)")
    ks = [k for k in TOP_K if all(len(p) >= k for p in predictions.values())]
    per_clip, chance = {}, []
    recall: dict[str, list[bool]] = {}
    for audio_id, labels in truth.items():
        ranked = list(predictions[audio_id])
        unknown = sorted(set(labels) - set(ranked))
        if unknown:
            raise ValueError(f"audio id {audio_id!r}: true label(s) {unknown} are not among its candidates {ranked}")
        per_clip[audio_id] = {f"top{k}": float(bool(set(ranked[:k]) & set(labels))) for k in ks}
        chance.append(len(set(labels)) / len(ranked))
        for label in labels:
            recall.setdefault(label, []).append(label in ranked[:len(labels)])
    classes = sorted({label for labels in truth.values() for label in labels}
                     | {p[0] for p in predictions.values()})
    index = {label: k for k, label in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for audio_id, labels in truth.items():
        if len(labels) == 1:
            matrix[index[labels[0]], index[predictions[audio_id][0]]] += 1
    corpus = {f"top{k}": float(np.mean([s[f"top{k}"] for s in per_clip.values()])) for k in ks}
    return {"corpus": {**corpus, "chance": float(np.mean(chance)), "n": len(truth)}, "per_clip": per_clip,
            "by_class": {c: {"recall": float(np.mean(recall[c])), "n": len(recall[c])} for c in sorted(recall)},
            "confusion": {"labels": classes, "matrix": matrix.tolist()}}


def format_scores(scores: dict, name: str = "") -> str:
    """Top-k accuracy and chance, then the recall of each class."""
    corpus = scores["corpus"]
    head = " ".join(f"top-{k[3:]} {v:.4f}" for k, v in corpus.items() if k.startswith("top"))
    lines = [f"{name + ': ' if name else ''}{head} (chance {corpus['chance']:.4f}, {corpus['n']} clips)",
             f"{'class':<24} {'n':>5} {'recall':>7}"]
    lines += [f"{c:<24} {s['n']:>5} {s['recall']:>7.3f}" for c, s in scores["by_class"].items()]
    return "\n".join(lines)


def plot_confusion(scores: dict, png: str | os.PathLike, title: str = "") -> None:
    """The confusion matrix of single-label clips as a heat map, rows normalised, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = scores["confusion"]["labels"], np.array(scores["confusion"]["matrix"], dtype=float)
    rows = matrix.sum(1, keepdims=True)
    size = 2.5 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, int(count), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted (top 1)")
    ax.set_ylabel("true (single-label clips)")
    ax.set_title(title or f"top-1 {scores['corpus']['top1']:.3f}, {int(matrix.sum())} single-label clips",
                 fontsize=9)
    fig.tight_layout()
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def candidate_labels(labels: str | Sequence[str] | None, truth: Mapping[str, Sequence[str]]) -> list[str]:
    """The candidate labels: ``labels`` (a list, a comma-separated string or a text file of one per line), or by
    default every label of ``truth``, sorted; distinct and non-empty."""
    if labels is None:
        if not truth:
            raise ValueError("no labelled split (labels.json), so the candidate labels must be given (--labels)")
        return sorted({x for v in truth.values() for x in v})
    if isinstance(labels, str):
        labels = Path(labels).read_text(encoding="utf-8").splitlines() if Path(labels).is_file() else labels.split(",")
    names = [str(x).strip() for x in labels if str(x).strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"Invalid labels. (expected distinct, non-empty labels, found {labels!r})")
    return names


def ranked_predictions(ids: Sequence[str], names: Sequence[str], scores: np.ndarray, digits: int = 6) -> list[dict]:
    """``[{"audio_id", "labels", "scores"}]``, each clip's labels best first, from ``scores`` [labels, clips]."""
    order = np.argsort(-scores, axis=0, kind="stable")
    return [{"audio_id": audio_id, "labels": [names[k] for k in order[:, j]],
             "scores": [round(float(scores[k, j]), digits) for k in order[:, j]]} for j, audio_id in enumerate(ids)]


def finish(predictions: list[dict], truth: Mapping[str, Sequence[str]], out: str | os.PathLike | None) -> dict | None:
    """Score ``predictions`` against the ``truth`` of their clips (None without truth) and, with ``out``, write
    ``predictions.json`` (and ``scores.json``, ``confusion.png``) into that folder."""
    scores = None
    if truth:
        scores = score_labels({p["audio_id"]: p["labels"] for p in predictions},
                              {p["audio_id"]: truth[p["audio_id"]] for p in predictions if p["audio_id"] in truth})
    if out:
        folder = Path(out)
        write_text_atomic(folder / "predictions.json", json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
        if scores:
            write_text_atomic(folder / "scores.json", json.dumps(scores, indent=1) + "\n")
            plot_confusion(scores, folder / "confusion.png")
    return scores


def show(result: dict, name: str) -> None:
    """Print a classifier's result: its scores, or each clip's best label when there is no truth."""
    if result.get("scores"):
        print(format_scores(result["scores"], name))
    else:
        for p in result["predictions"]:
            print(f"{p['audio_id']}\t{p['labels'][0]}\t{p['scores'][0]:.4f}")


def main(predictions: str, truth: str, out: str | None = None, confusion: str | None = None) -> dict:
    """Score ranked label predictions (see the module docstring).

    Args:
        predictions: JSON list of {"audio_id", "labels": [best first, ...]}, one per labelled clip.
        truth: a split folder holding labels.json, or the file.
        out: also write the scores as JSON (``eval.compare`` reads its top1 and top5).
        confusion: also draw the confusion matrix of single-label clips into this PNG.
    """
    scores = score_labels(read_predictions(predictions), read_truth(truth))
    if out:
        write_text_atomic(out, json.dumps(scores, indent=1) + "\n")
    if confusion:
        plot_confusion(scores, confusion)
    print(format_scores(scores))
    return scores


if __name__ == "__main__":
    from common.cli import run

    run(main, "eval.classification", text_args=("predictions", "truth", "out", "confusion"))
