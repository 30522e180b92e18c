"""Classification by prompt with a prefix-LM captioner (Pengi's closed-ended task): each clip's candidate labels
ranked by the LM's log-probability of each label, as the answer to a prompt, after the clip's audio prefix.

    python -m captioning.classify --checkpoint exp/lm/best.pt --features eval.h5 --truth data/synth/evaluation \
        [--labels dog,rain|labels.txt] [--prompt "[audio] What do you hear?"] [--out DIR]

The clips are those of ``--truth``, a split with ``labels.json`` (scored, its labels the candidates unless
``--labels`` names them), or of the feature store when ``--truth`` is not given (then ``--labels`` is needed).
``--out`` gets ``predictions.json`` (``[{"audio_id", "labels": [best first], "scores": [log-probabilities]}]``) and,
when scored, ``scores.json`` and ``confusion.png``, the same files ``python -m retrieval.zeroshot`` writes, so the
two compare clip by clip (``python -m eval.compare --metrics top1``). A label is scored as the sum of its tokens'
log-probabilities and the end of the answer, so the label the LM would write is ranked first.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

from typing import Any, Sequence

import torch

from captioning.answer import load_prefix_lm, score_candidates
from captioning.models.prefix_lm import AUDIO_MARK
from common.cli import run
from common.device import resolve_device
from eval.classification import candidate_labels, finish, ranked_predictions, read_truth, show
from features.store import open_store

DEFAULT_PROMPT = AUDIO_MARK + " What do you hear?"


def classify(checkpoint: str, features: str, truth: str | None = None, labels: str | Sequence[str] | None = None,
             prompt: str = DEFAULT_PROMPT, out: str | None = None, batch_size: int = 16, device: str = "auto"
             ) -> dict[str, Any]:
    """Rank the candidate labels for every clip (see the module docstring), the model on ``device``.

    Returns ``{"labels", "prompt", "predictions": [{"audio_id", "labels", "scores"}]}`` and, with ``truth``,
    ``"scores"`` (:func:`eval.classification.score_labels`).
    """
    resolve_device(device)  # a bad device is refused before any work
    if AUDIO_MARK not in prompt:
        raise ValueError(f"Invalid prompt. (expected a string containing {AUDIO_MARK!r}, found {prompt!r})")
    known = read_truth(truth) if truth is not None else {}
    names = candidate_labels(labels, known)
    if known:
        ids = list(known)
    else:
        with open_store(features) as store:
            ids = list(store.ids)
    model, store = load_prefix_lm(checkpoint, features, ids, device)
    with store, torch.no_grad():
        logprobs = score_candidates(model, store, [(i, prompt) for i in ids], [names] * len(ids), batch_size)
    predictions = ranked_predictions(ids, names, torch.stack(logprobs, 1).float().cpu().numpy(), digits=4)
    result: dict[str, Any] = {"labels": names, "prompt": prompt, "predictions": predictions}
    scores = finish(predictions, known, out)
    if scores:
        result["scores"] = scores
    return result


def main(checkpoint: str, features: str, truth: str | None = None, labels: str | None = None,
         prompt: str = DEFAULT_PROMPT, out: str | None = None, batch_size: int = 16, device: str = "auto") -> None:
    """Classify clips by prompt with a prefix-LM captioner (see the module docstring).

    Args:
        checkpoint: a prefix-LM captioner (``captioning.train_lm``, or a merged one).
        features: the HDF5 feature store of the clips, from the encoder the captioner was trained on.
        truth: a split folder with labels.json (or the file): its clips are classified and scored.
        labels: candidate labels, comma-separated or a text file with one per line (default: the truth's labels).
        prompt: the prompt, holding ``[audio]`` where the audio prefix goes.
        out: a folder for predictions.json (and scores.json, confusion.png when scored).
        batch_size: clips scored in one pass, with all their candidates.
        device: where the model runs: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N.
    """
    show(classify(checkpoint, features, truth, labels, prompt, out, batch_size, device), "by prompt")


if __name__ == "__main__":
    run(main, "captioning.classify", text_args=("checkpoint", "features", "truth", "labels", "prompt", "out"))
