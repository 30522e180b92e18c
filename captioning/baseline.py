"""Nearest-neighbour captioning baseline: each clip gets a caption of the training clip closest to it.

    python -m captioning.baseline --train_features dev.h5 --train_captions data/development \
        --features eval.h5 --out predictions.json [--csv submission.csv]

Closeness is the cosine similarity of the stores' clip embeddings (the frozen stage-1 encoder's); of the
neighbour's captions, the one that agrees most with the others (highest CIDEr-D against them) is copied. A captioner
that cannot beat this has learned nothing beyond retrieval.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import numpy as np

from common.cli import run
from captioning.data import load_captions, open_checked_store
from captioning.decode import write_predictions
from eval.fast_cider import FastCiderD


def consensus_captions(captions: dict[str, list[str]]) -> dict[str, str]:
    """For each clip, its caption with the highest CIDEr-D against the clip's other captions."""
    ids = [i for i in captions if len(captions[i]) > 1]
    best = {i: captions[i][0] for i in captions}
    if not ids:
        return best
    scorer = FastCiderD({(i, k): [c for j, c in enumerate(captions[i]) if j != k]
                         for i in ids for k in range(len(captions[i]))})
    keys = [(i, k) for i in ids for k in range(len(captions[i]))]
    scores = scorer.score([captions[i][k] for i, k in keys], keys)
    for i in ids:
        own = [s for (j, _), s in zip(keys, scores) if j == i]
        best[i] = captions[i][int(np.argmax(own))]
    return best


def _unit_clips(store, ids: list[str]) -> np.ndarray:
    clips = np.stack([store.clip(i) for i in ids]).astype(np.float32)  # (N, D)
    return clips / np.maximum(np.linalg.norm(clips, axis=1, keepdims=True), 1e-12)


def nearest_neighbour(train_features: str, train_captions: str, features: str, out: str | None = None,
                      csv: str | None = None) -> dict[str, str]:
    """``{audio_id: caption}`` for every clip of ``features``, copied from its nearest training clip."""
    captions = load_captions(train_captions)
    train_ids = list(captions)
    train_store = open_checked_store(train_features, need_ids=train_ids)
    store = open_checked_store(features)
    for key in ("encoder", "checkpoint_sha256", "clip_dim"):
        if store.attrs[key] != train_store.attrs[key]:
            raise ValueError(f"{features}: {key} {store.attrs[key]!r} differs from {train_features}'s "
                             f"{train_store.attrs[key]!r}; neighbours need one embedding space")
    chosen = consensus_captions(captions)
    ids = list(store.ids)
    similarity = _unit_clips(store, ids) @ _unit_clips(train_store, train_ids).T  # (N, N_train)
    predictions = {i: chosen[train_ids[j]] for i, j in zip(ids, similarity.argmax(axis=1))}
    if out or csv:
        write_predictions(predictions, out, csv)
    return predictions


if __name__ == "__main__":
    run(nearest_neighbour, "captioning.baseline")
