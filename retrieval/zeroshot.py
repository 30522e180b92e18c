"""Zero-shot classification by retrieval: each clip's labels ranked by the similarity of its audio embedding to a
prompt per label (CLAP's "This is a sound of {label}."), with one bi-encoder or an ensemble (similarities averaged).

    python -m retrieval.zeroshot --checkpoints A.pt[,B.pt] --audio SPLIT_OR_DIR [--labels dog,rain|labels.txt] \
        [--prompt "This is a sound of {label}."] [--out DIR]

``--audio`` is a manifest split, a folder of audio files (as ``retrieval.search`` reads them), or a prepared corpus
whose splits are folds (ESC-50's five, UrbanSound8K's ten: ``python -m corpus.prepare esc50 ...``): then each fold
is scored and the mean and standard deviation over folds reported, as the literature does. A split with
``labels.json`` (a label-only corpus, the synthetic corpus) is scored: top-1 and top-5 accuracy, recall per class and
a confusion matrix (:mod:`eval.classification`); its labels are the candidates unless ``--labels`` names them (for
folds, the labels of all folds).

``--out`` gets ``predictions.json`` (``[{"audio_id", "labels": [best first], "scores": [...]}]``), and for a
labelled split ``scores.json`` and ``confusion.png`` (for folds: ``<out>/<fold>/`` each, and ``folds.json``).
Clips are embedded as search embeds them: long audio in feature extraction's windows, never a random crop, so a
clip always gets the same labels. Unreadable files are skipped and listed.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.cli import run
from common.device import resolve_device
from common.io import write_text_atomic
from eval.classification import candidate_labels, finish, ranked_predictions, show
from features.manifest import WAV_CSV, read_manifest
from retrieval.search import _check_text, _models, audio_collection, text_audio_scores

DEFAULT_PROMPT = "This is a sound of {label}."


def _truth(audio: str) -> dict[str, list[str]]:
    """The labels of a manifest split (empty for a folder or an unlabelled split)."""
    return read_manifest(audio).labels if (Path(audio) / WAV_CSV).is_file() else {}


def fold_splits(audio: str | Path) -> list[Path]:
    """The split folders of a prepared corpus given as ``audio`` (none if ``audio`` is a split or an audio folder),
    in fold order (fold2 before fold10)."""
    audio = Path(audio)
    if (audio / WAV_CSV).is_file() or not audio.is_dir():
        return []
    splits = [d for d in audio.iterdir() if (d / WAV_CSV).is_file()]
    number = lambda d: (int(d.name[4:]) if d.name[:4] == "fold" and d.name[4:].isdigit() else 10**9, d.name)  # noqa: E731
    return sorted(splits, key=number)


def zero_shot_folds(checkpoints: str | Sequence[str], audio: str, labels: str | Sequence[str] | None = None,
                    prompt: str = DEFAULT_PROMPT, out: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Zero-shot classification of every fold of a prepared corpus: ``{"folds": {fold: result}, "mean": {metric:
    {"mean", "std"}}, ...}`` (population std over folds), candidates the labels of all folds."""
    folds = fold_splits(audio)
    if not folds:
        raise ValueError(f"{audio}: no split folders (with {WAV_CSV}) inside")
    if labels is None:
        labels = sorted({x for fold in folds for v in _truth(str(fold)).values() for x in v})
        if not labels:
            raise ValueError(f"{audio}: its splits have no labels.json, so --labels must name the candidate labels")
    results = {fold.name: zero_shot(checkpoints, str(fold), labels, prompt,
                                    str(Path(out) / fold.name) if out else None, device) for fold in folds}
    scored = [r["scores"]["corpus"] for r in results.values() if "scores" in r]
    summary = {key: {"mean": float(np.mean([c[key] for c in scored])), "std": float(np.std([c[key] for c in scored]))}
               for key in ("top1", "top5") if scored and all(key in c for c in scored)}
    if out:
        write_text_atomic(Path(out) / "folds.json", json.dumps(
            {"folds": {f: r["scores"]["corpus"] for f, r in results.items() if "scores" in r}, "mean": summary},
            indent=1) + "\n")
    return {"folds": results, "mean": summary, "labels": list(next(iter(results.values()))["labels"]),
            "prompt": prompt}


def zero_shot(checkpoints: str | Sequence[str], audio: str, labels: str | Sequence[str] | None = None,
              prompt: str = DEFAULT_PROMPT, out: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Rank the candidate ``labels`` for every clip of ``audio`` (see the module docstring), the models on
    ``device``.

    Returns ``{"labels", "prompt", "predictions": [{"audio_id", "labels", "scores"}], "skipped"}`` and, for a
    labelled split, ``"scores"`` (:func:`eval.classification.score_labels`).
    """
    resolve_device(device)  # a bad device is refused before any work
    if "{label}" not in _check_text(prompt, "prompt"):
        raise ValueError(f"Invalid prompt. (expected a string containing '{{label}}', found {prompt!r})")
    truth = _truth(audio)
    if labels is None and not truth:
        raise ValueError(f"{audio}: no labels.json, so --labels must name the candidate labels")
    names = candidate_labels(labels, truth)
    sim, ids, skipped = text_audio_scores(_models(checkpoints, device), [prompt.format(label=n) for n in names],
                                          audio_collection(audio))
    predictions = ranked_predictions(ids, names, sim)
    result: dict[str, Any] = {"labels": names, "prompt": prompt, "predictions": predictions, "skipped": skipped}
    scores = finish(predictions, truth, out)
    if scores:
        result["scores"] = scores
    return result


def main(checkpoints: str, audio: str, labels: str | None = None, prompt: str = DEFAULT_PROMPT,
         out: str | None = None, device: str = "auto") -> None:
    """Zero-shot classification of the clips of ``audio`` (see the module docstring).

    Args:
        checkpoints: retrieval checkpoint(s), comma-separated: an ensemble averages their similarities.
        audio: a manifest split (scored when it has labels.json), a prepared corpus of folds (each scored, then the
            mean over folds), or a folder of audio files.
        labels: candidate labels, comma-separated or a text file with one per line (default: the split's labels).
        prompt: the text embedded for each label, holding ``{label}``.
        out: a folder for predictions.json (and scores.json, confusion.png for a labelled split).
        device: where the models run: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N.
    """
    if fold_splits(audio):
        result = zero_shot_folds(checkpoints, audio, labels, prompt, out, device)
        for fold, r in result["folds"].items():
            show(r, fold)
        print("\n".join(f"{k}: {v['mean']:.4f} +- {v['std']:.4f} over {len(result['folds'])} folds"
                        for k, v in result["mean"].items()))
        return
    result = zero_shot(checkpoints, audio, labels, prompt, out, device)
    for line in result["skipped"]:
        print(f"skipped: {line}")
    show(result, "zero-shot")


if __name__ == "__main__":
    run(main, "retrieval.zeroshot", text_args=("checkpoints", "audio", "labels", "prompt", "out"))
