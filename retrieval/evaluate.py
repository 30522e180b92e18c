"""Evaluate retrieval checkpoints on a manifest split, alone or as an ensemble.

    python -m retrieval.evaluate --checkpoints exp/a/best.pt[,exp/b/best.pt] --manifest data/evaluation [--out r.json] \
        [--csv submission.csv]

Text-to-audio and audio-to-text R@1, R@5, R@10 and mAP@10 under the Clotho convention (every caption of a clip is
a query whose one relevant item is its clip; an audio query's relevant items are all its captions), computed by
``eval.retrieval``. Clips without captions are left out. An ensemble averages the text-by-audio cosine similarity
matrices of its members, which may differ in architecture and sample rate (each decodes the audio at its own rate).
Clips are seen whole (the encoder's own handling of long audio: its feature fusion, or pooling over all frames);
``--long_audio crop|windows`` sees clips longer than ``--window_seconds`` as their central crop or as the average
of their windows' embeddings instead (:func:`retrieval.embed.audio_views`), to compare these ways. ``--csv``
writes the DCASE retrieval submission of the split's captions (:func:`retrieval.search.write_ranking_csv`).
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import functools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import checkpoint_paths
from common.cli import run
from common.device import resolve_device
from common.io import write_text_atomic
from eval.retrieval import retrieval_metrics
from features.manifest import Manifest, read_manifest
from features.waveforms import WaveformStore
from retrieval.embed import audio_embeddings, similarity, text_embeddings
from retrieval.model import BiEncoder, load_model
from retrieval.search import write_ranking_csv

DIRECTIONS = {"text_to_audio": "t2a", "audio_to_text": "a2t"}


def queries(manifest: Manifest) -> tuple[list[str], list[str], np.ndarray]:
    """(captioned clip ids, captions clip by clip, clip index of each caption) of a split."""
    clip_ids = [i for i in manifest.ids if manifest.captions.get(i)]
    if not clip_ids:
        raise ValueError(f"split '{manifest.split}': no captioned clips to evaluate on")
    captions = [c for i in clip_ids for c in manifest.captions[i]]
    owner = np.repeat(np.arange(len(clip_ids)), [len(manifest.captions[i]) for i in clip_ids])
    return clip_ids, captions, owner


def model_similarity(model: BiEncoder, manifest: Manifest, store: WaveformStore | None = None,
                     batch_size: int = 16, **long_audio: Any) -> np.ndarray:
    """Text-by-audio cosine similarity [n_captions, n_clips] of a split (order of :func:`queries`); ``long_audio``:
    ``long_audio`` and ``window_seconds`` of :func:`retrieval.embed.audio_embeddings`."""
    clip_ids, captions, _ = queries(manifest)
    store = store if store is not None else WaveformStore(manifest, model.sample_rate)
    if store.sample_rate != model.sample_rate:
        raise ValueError(f"audio decoded at {store.sample_rate} Hz, model expects {model.sample_rate} Hz")
    audio = audio_embeddings(model, [store[i] for i in clip_ids], batch_size, **long_audio)  # (Na, E)
    text = text_embeddings(model, captions)  # (Nt, E)
    return similarity(text, audio)


def query_scores(sim: np.ndarray, owner: Sequence[int]) -> dict[str, np.ndarray]:
    """Every query's score, ``{"t2a_R1": [per caption], ..., "a2t_mAP10": [per clip]}``, from a similarity
    [n_captions, n_clips]; each metric is the mean of its array."""
    out = {}
    for direction, scores in retrieval_metrics(sim, owner, per_query=True).items():
        for name, values in scores.items():
            out[f"{DIRECTIONS[direction]}_{name.replace('@', '')}"] = values
    return out


def flat_metrics(sim: np.ndarray, owner: Sequence[int]) -> dict[str, float]:
    """``{"t2a_R1": ..., "t2a_mAP10": ..., "a2t_R1": ...}`` from a similarity [n_captions, n_clips]."""
    return _means(query_scores(sim, owner))


def _means(scores: dict[str, np.ndarray]) -> dict[str, float]:
    return {key: float(values.mean()) for key, values in scores.items()}


def _rounded(scores: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {key: np.round(values, 6).tolist() for key, values in scores.items()}


def evaluate_model(model: BiEncoder, manifest: Manifest, store: WaveformStore | None = None,
                   batch_size: int = 16) -> dict[str, float]:
    """Retrieval metrics of one model on a split (keys as in :func:`flat_metrics`)."""
    return flat_metrics(model_similarity(model, manifest, store, batch_size), queries(manifest)[2])


def member_similarities(checkpoints: Sequence[str], manifest: Manifest, batch_size: int = 16,
                        device: str = "cpu", **long_audio: Any) -> list[np.ndarray]:
    """Each checkpoint's similarity matrix, its model on ``device``; audio is decoded once per distinct sample
    rate."""
    stores: dict[int, WaveformStore] = {}
    sims = []
    for path in checkpoints:
        model = load_model(path, device=device)  # whole clips, as training validates
        store = stores.setdefault(model.sample_rate, WaveformStore(manifest, model.sample_rate))
        sims.append(model_similarity(model, manifest, store, batch_size, **long_audio))
    return sims


def ensemble_similarity(checkpoints: Sequence[str], manifest: Manifest, batch_size: int = 16) -> np.ndarray:
    """Mean of the members' similarity matrices."""
    return np.mean(member_similarities(checkpoints, manifest, batch_size), axis=0)


def evaluate(checkpoints: str | Sequence[str], manifest: str, out: str | None = None, batch_size: int = 16,
             long_audio: str = "whole", window_seconds: float = 10.0, csv: str | None = None,
             systems: str | None = None, systems_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Evaluate one checkpoint or an ensemble (comma-separated or a list) on the split folder ``manifest``.

    Returns (and with ``out`` writes as JSON) ``{"checkpoints", "manifest", "n_clips", "n_captions", "metrics",
    "per_query"}``; an ensemble adds ``"members": {checkpoint: metrics}``, each member scored alone from the same
    pass, and ``"members_per_query"``. ``per_query`` holds every caption's (t2a) and clip's (a2t) scores, in the
    split's order, for paired comparisons (``eval.compare.paired_bootstrap``). ``long_audio`` and ``window_seconds``:
    how clips longer than the window are seen (:func:`retrieval.embed.audio_views`), recorded in the result.
    ``csv``: the DCASE retrieval submission of the split's captions (the ensemble's ranking).
    ``systems`` (``"name=a.pt,b.pt other=c.pt"``, members among ``checkpoints``) with ``systems_dir``: named
    ensembles of the members, each written as ``<name>.json`` (what evaluating its checkpoints alone would write)
    and ``<name>.csv``, from the same pass: no model embeds the split twice. ``device``: where the models run
    (:func:`common.device.resolve_device`); the scores agree with the CPU's within float rounding.
    """
    where = resolve_device(device)  # a bad device is refused before any work
    paths = checkpoint_paths(checkpoints)
    named = parse_systems(systems, paths) if systems else {}
    if named and not systems_dir:
        raise ValueError("--systems needs --systems_dir, the folder for each system's results")
    split = read_manifest(manifest)
    clip_ids, captions, owner = queries(split)
    sims = member_similarities(paths, split, batch_size, where, long_audio=long_audio, window_seconds=window_seconds)
    common = {"manifest": str(manifest), "n_clips": len(clip_ids), "n_captions": len(captions),
              "long_audio": long_audio, **({"window_seconds": window_seconds} if long_audio != "whole" else {})}

    @functools.cache
    def member_scores(i: int) -> dict[str, np.ndarray]:  # a model in several systems is scored alone once
        return query_scores(sims[i], owner)

    def ensemble_result(members: list[int], out: str | Path | None, csv: str | Path | None) -> dict[str, Any]:
        sim = np.mean([sims[i] for i in members], axis=0)
        scores = query_scores(sim, owner)
        result = {"checkpoints": [str(paths[i]) for i in members], **common, "metrics": _means(scores),
                  "per_query": _rounded(scores)}
        if len(members) > 1:
            alone = {str(paths[i]): member_scores(i) for i in members}
            result["members"] = {p: _means(s) for p, s in alone.items()}
            result["members_per_query"] = {p: _rounded(s) for p, s in alone.items()}
        if out:
            write_text_atomic(out, json.dumps(result, indent=1) + "\n")
        if csv:
            write_ranking_csv(csv, captions, sim, clip_ids)
        return result

    for name, members in named.items():
        ensemble_result(members, Path(systems_dir) / f"{name}.json", Path(systems_dir) / f"{name}.csv")
    return ensemble_result(list(range(len(paths))), out, csv)


def parse_systems(spec: str, paths: Sequence[str | Path]) -> dict[str, list[int]]:
    """``"name=a.pt,b.pt other=c.pt"`` -> each name's members as indices into ``paths``."""
    known = {str(p): i for i, p in enumerate(paths)}
    systems: dict[str, list[int]] = {}
    for item in spec.split():
        name, sep, members = item.partition("=")
        if not sep or not name or not members:
            raise ValueError(f"--systems: {item!r} is not name=checkpoint[,checkpoint...]")
        members = checkpoint_paths(members)
        missing = [m for m in members if m not in known]
        if missing:
            raise ValueError(f"--systems: {name}'s member {missing[0]} is not one of --checkpoints")
        systems[name] = [known[m] for m in members]
    return systems


def main(checkpoints: str, manifest: str, out: str | None = None, batch_size: int = 16, long_audio: str = "whole",
         window_seconds: float = 10.0, csv: str | None = None, systems: str | None = None,
         systems_dir: str | None = None, device: str = "auto") -> None:
    """Evaluate one retrieval checkpoint or an ensemble (comma-separated) on a split: R@1/5/10 and mAP@10 in both
    directions, printed; ``--out`` also writes every query's scores (see :func:`evaluate`).

    Args:
        checkpoints: retrieval checkpoints, comma-separated (more than one: their ensemble, and each alone).
        manifest: the split folder (wav.csv, captions.json).
        out: a JSON file for the metrics and every query's scores.
        batch_size: clips encoded at once.
        long_audio: how clips longer than window_seconds are seen: whole (the encoder's own handling: feature
            fusion, or pooling over all frames), crop (the central window) or windows (the mean of the windows'
            embeddings).
        window_seconds: the window of crop and windows.
        csv: a DCASE retrieval submission CSV (caption,fname_1,...,fname_10) of the split's captions.
        systems: named ensembles of the checkpoints, "name=a.pt,b.pt other=c.pt", scored from the same pass.
        systems_dir: where each system's <name>.json and DCASE <name>.csv go.
        device: where the models run: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N.
    """
    result = evaluate(checkpoints, manifest, out, batch_size, long_audio, window_seconds, csv, systems, systems_dir,
                      device)
    for name, metrics in [("ensemble" if "members" in result else "model", result["metrics"]),
                          *result.get("members", {}).items()]:
        print(f"{name}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run(main, "retrieval.evaluate", text_args=("systems",))
