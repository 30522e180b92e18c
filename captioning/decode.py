"""Caption a feature store with one model or an ensemble: JSON predictions, a DCASE submission CSV, scores.

    python -m captioning.decode --checkpoints exp/a/averaged.pt,exp/b/averaged.pt --features eval.h5 \
        --out pred.json --csv submission.csv --beam_size 3 --references data/eval/captions.json \
        [--length_norm auto --val_features val.h5 --val_references data/val] [--rerank exp/retrieval/best.pt]
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from captioning.checkpoint import load_captioner
from captioning.data import Clips, collate, load_captions, open_checked_store
from captioning.search import Ensemble, Hypotheses, beam_hypotheses
from captioning.vocab import Vocabulary, tokenize
from common import checkpoint_paths
from common.io import write_csv, write_text_atomic
from common.cli import run
from common.device import resolve_device
from common.tensor import module_device
from features.store import FeatureStore


def caption_clips(scorer: Ensemble, store: FeatureStore, vocab: Vocabulary, audio_ids: Sequence[str] | None = None,
                  *, beam_size: int = 3, max_len: int = 30, min_len: int = 1, length_norm: float = 0.0,
                  batch_size: int = 32) -> dict[str, str]:
    """``{audio_id: caption}`` for ``audio_ids`` (default: every clip of ``store``), decoded in batches."""
    ids, hyps = store_hypotheses(scorer, store, vocab, audio_ids, beam_size=beam_size, max_len=max_len,
                                 min_len=min_len, batch_size=batch_size)
    return captions_of(ids, hyps, vocab, length_norm)


def store_hypotheses(scorer: Ensemble, store: FeatureStore, vocab: Vocabulary, audio_ids: Sequence[str] | None = None,
                     *, beam_size: int = 3, max_len: int = 30, min_len: int = 1,
                     batch_size: int = 32) -> tuple[list[str], Hypotheses]:
    """The clips' ids and the final hypotheses of their beam searches (one row per clip), decoded in batches."""
    for model in scorer.models:
        model.eval()
    loader = DataLoader(Clips(store, audio_ids), batch_size=batch_size, shuffle=False, collate_fn=collate)
    device = module_device(scorer.models[0])
    ids: list[str] = []
    parts: list[Hypotheses] = []
    for batch in loader:
        parts.append(beam_hypotheses(scorer, batch["frames"].to(device), batch["frame_lengths"].to(device),
                                     bos=vocab.bos, eos=vocab.eos, pad=vocab.pad, beam_size=beam_size,
                                     max_len=max_len, min_len=min_len))
        ids += batch["audio_ids"]
    return ids, Hypotheses.concat(parts)


def captions_of(ids: Sequence[str], hyps: Hypotheses, vocab: Vocabulary, length_norm: float = 0.0,
                bonus: torch.Tensor | None = None) -> dict[str, str]:
    """``{audio_id: caption}``: each clip's best hypothesis (:meth:`Hypotheses.best`)."""
    return dict(zip(ids, (vocab.decode(w) for w in hyps.best(length_norm, bonus))))


def candidate_captions(hyps: Hypotheses, vocab: Vocabulary) -> list[list[str]]:
    """Every hypothesis as text, [B][K]."""
    return [[vocab.decode(w) for w in clip] for clip in hyps.words]


def caption_frames(scorer: Ensemble, frames: torch.Tensor, frame_lengths: torch.Tensor, vocab: Vocabulary, *,
                   beam_size: int = 3, max_len: int = 30, min_len: int = 1, length_norm: float = 0.0,
                   clips: torch.Tensor | None = None, reranker: Any = None, rerank_weight: float = 0.0
                   ) -> list[tuple[str, float]]:
    """One caption per clip of a padded batch, with its mean log-probability per word (:meth:`Hypotheses.chosen`):
    ``frames`` [B, T, D], ``frame_lengths`` [B] -> B pairs. With a ``reranker`` (``retrieval.rerank.Reranker``) and
    ``rerank_weight`` > 0, ``clips`` [B, D_clip] are the clip vectors of the reranker's own audio encoder, and each
    caption is chosen with its audio-text similarity."""
    device = module_device(scorer.models[0])  # the search runs where the captioners are
    hyps = beam_hypotheses(scorer, frames.to(device), frame_lengths.to(device), bos=vocab.bos, eos=vocab.eos,
                           pad=vocab.pad, beam_size=beam_size, max_len=max_len, min_len=min_len)
    bonus = None
    if reranker is not None and rerank_weight:
        bonus = rerank_weight * reranker.similarities(clips, candidate_captions(hyps, vocab))
    return [(vocab.decode(w), score) for w, score in hyps.chosen(length_norm, bonus)]


def score_cider(predictions: dict[str, str], references: dict[str, list[str]]) -> float:
    """Corpus CIDEr-D of ``predictions`` against ``references``, both tokenized like the vocabulary."""
    from eval.cider_d import cider_d

    ids = list(predictions)
    corpus, _ = cider_d([" ".join(tokenize(predictions[i])) for i in ids],
                        [[" ".join(tokenize(r)) for r in references[i]] for i in ids], tokenize=False)
    return corpus["cider_d"]


def load_ensemble(checkpoints: Sequence[str | Path], device: str | torch.device = "cpu"
                  ) -> tuple[Ensemble, Vocabulary, dict]:
    """Load checkpoints that share one vocabulary and one kind of features onto ``device``
    (:func:`common.device.resolve_device`); returns the ensemble, the vocabulary and the first checkpoint's
    ``feature_attrs``."""
    where = resolve_device(device)
    models, vocab, attrs = [], None, None
    for path in checkpoints:
        model, v, checkpoint = load_captioner(path)
        if vocab is None:
            vocab, attrs = v, checkpoint["feature_attrs"]
        elif v != vocab:
            raise ValueError(f"{path}: its vocabulary differs from {checkpoints[0]}'s; an ensemble needs one vocabulary")
        elif checkpoint["feature_attrs"] != attrs:
            raise ValueError(f"{path}: trained on other features ({checkpoint['feature_attrs']}) than "
                             f"{checkpoints[0]} ({attrs})")
        models.append(model.to(where))
    return Ensemble(models), vocab, attrs


def write_predictions(predictions: dict[str, str], out_json: str | Path | None,
                      out_csv: str | Path | None = None, *, paths: Mapping[str, str] | None = None,
                      extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """``[{"audio_id", "caption"}]`` as JSON (if ``out_json``) and, if asked, the DCASE CSV
    ``file_name,caption_predicted``. With ``paths`` (audio_id -> audio file), JSON rows also hold ``"path"``; with
    ``extra`` (audio_id -> fields, e.g. ``{"silent": True}``), those clips' JSON rows end with their fields. The CSV
    keeps its two columns."""
    if out_json is not None:
        extra = extra or {}
        rows = [{"audio_id": i, **({"path": paths[i]} if paths else {}), "caption": c, **extra.get(i, {})}
                for i, c in predictions.items()]
        write_text_atomic(out_json, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    if out_csv is not None:
        write_csv(out_csv, ("file_name", "caption_predicted"), list(predictions.items()))


LENGTH_NORMS = (0.0, 0.5, 1.0, 1.5, 2.0)  # the alphas "auto" tries on the validation split
RERANK_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # the re-ranking weights "auto" tries


def store_similarity(reranker: Any, store: FeatureStore, ids: Sequence[str], hyps: Hypotheses,
                     vocab: Vocabulary) -> torch.Tensor:
    """Audio-text similarity [N, K] of every hypothesis with its clip, from the store's clip vectors (refused unless
    the reranker's audio encoder made them)."""
    reranker.check_encoder(store.attrs.get("encoder_weights_sha256"), f"feature store {store.path}")
    clips = torch.from_numpy(np.stack([store.clip(i) for i in ids])).float()
    return reranker.similarities(clips, candidate_captions(hyps, vocab))


def choose_decoding(ids: Sequence[str], hyps: Hypotheses, vocab: Vocabulary, references: dict[str, list[str]], *,
                    length_norms: Sequence[float] = LENGTH_NORMS, weights: Sequence[float] = (0.0,),
                    similarity: torch.Tensor | None = None) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:
    """The (length norm, re-ranking weight) whose captions score the highest CIDEr-D against ``references`` (the
    smallest settings among ties), and every pair's score. Plain sums of log-probabilities favour short captions:
    an unsure model ends early (captions about half the references' length), which normalisation by length undoes;
    the weight adds the retrieval model's audio-text ``similarity`` [N, K]."""
    scores = {(alpha, weight): score_cider(captions_of(ids, hyps, vocab, alpha, weight * similarity
                                                       if weight else None), references)
              for alpha in length_norms for weight in weights}
    return max(scores, key=lambda k: (scores[k], -k[0], -k[1])), scores


def decoding_record_path(out: str | Path) -> Path:
    """Where :func:`decode` records how it decoded ``out``: ``<out stem>.decoding.json`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.decoding.json")


def decode(checkpoints: str | Sequence[str], features: str, out: str, csv: str | None = None, beam_size: int = 3,
           max_len: int = 30, min_len: int = 1, length_norm: float | str = 0.0, rerank: str | None = None,
           rerank_weight: float | str | None = None, batch_size: int = 32, references: str | None = None,
           val_features: str | None = None, val_references: str | None = None,
           variants: bool = False, device: str = "auto") -> dict[str, object]:
    """Caption every clip of the feature store ``features`` and write ``out`` (JSON) and ``csv`` (DCASE format).

    Args:
        checkpoints: one captioner checkpoint, or several (comma-separated) sharing a vocabulary: their
            log-probabilities are averaged at every step of one beam search (decoders may differ).
        features: HDF5 feature store; it must come from the encoder the checkpoints were trained on.
        out: predictions as JSON ``[{"audio_id", "caption"}]``; how they were decoded (the settings, and with
            ``auto`` every setting's validation CIDEr-D) goes to ``<out stem>.decoding.json`` beside it.
        csv: optional DCASE submission CSV ``file_name,caption_predicted``.
        beam_size: beams per clip (1 = greedy); the final beams are the candidates the choice below ranks.
        max_len: at most this many words per caption.
        min_len: at least this many words per caption.
        length_norm: alpha of ``score / length ** alpha`` when choosing among finished beams (0 = none), or
            ``auto``, the alpha of 0, 0.5, 1, 1.5, 2 with the best CIDEr-D on ``val_features`` against
            ``val_references``, never on the evaluation split.
        rerank: a retrieval checkpoint whose audio encoder made ``features`` (its ``best.pt``): each finished beam
            is also ranked by its audio-text similarity with the clip (SLAM-AAC's CLAP-Refine), plus
            ``rerank_weight`` x similarity.
        rerank_weight: the weight, or ``auto`` (the default with ``rerank``): the one of 0, 0.5, 1, 2, 4, 8, 16
            with the best validation CIDEr-D, chosen together with an ``auto`` length_norm.
        batch_size: clips per beam-search batch.
        references: optional ``captions.json`` or split folder; when given, CIDEr-D is computed and returned.
        val_features: the validation split's feature store, for ``auto``.
        val_references: the validation split's folder or ``captions.json``, for ``auto``.
        variants: also write, from the same beams, ``<out stem>.plain.json`` (no length normalisation, no
            re-ranking) and with ``rerank`` ``<out stem>.no_rerank.json`` (the length norm chosen without
            re-ranking), for comparisons with the chosen decoding.
        device: where the models run: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N. Captions are the CPU's, but for ties within float rounding.
    Returns ``{"clips": n, "cider_d": score or None, "length_norm": alpha, "rerank_weight": weight}``.
    """
    if rerank is None and rerank_weight is not None:
        raise ValueError("--rerank_weight weighs re-ranking: give --rerank (a retrieval checkpoint) too")
    rerank_weight = "auto" if rerank is not None and rerank_weight is None else (rerank_weight or 0.0)
    for name, value in (("length_norm", length_norm), ("rerank_weight", rerank_weight)):
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"Invalid {name}. (expected a number >= 0 or 'auto', found {value!r})")
        if value == "auto" and not (val_features and val_references):
            raise ValueError(f"--{name} auto chooses on the validation split: give --val_features and "
                             "--val_references")
    scorer, vocab, attrs = load_ensemble(checkpoint_paths(checkpoints), device)
    reranker = None
    if rerank is not None:
        from retrieval.rerank import Reranker  # the first stage's model, asked for: decoding uses both stages

        reranker = Reranker.load(rerank, device)
    expect = {k: v for k, v in attrs.items() if k != "checkpoint_sha256" or v}
    store = open_checked_store(features, expect=expect)
    decoding = {"beam_size": beam_size, "max_len": max_len, "min_len": min_len, "batch_size": batch_size}
    record: dict[str, Any] = {"checkpoints": [str(p) for p in checkpoint_paths(checkpoints)], **decoding,
                              "rerank": rerank}
    settings = {"length_norm": length_norm, "rerank_weight": rerank_weight}
    with torch.inference_mode():
        if "auto" in settings.values():
            val_store = open_checked_store(val_features, expect=expect)
            ids, hyps = store_hypotheses(scorer, val_store, vocab, **decoding)
            similarity = None if reranker is None else store_similarity(reranker, val_store, ids, hyps, vocab)
            grid = {name: (grid if settings[name] == "auto" else (float(settings[name]),))
                    for name, grid in (("length_norm", LENGTH_NORMS), ("rerank_weight", RERANK_WEIGHTS))}
            references_val = load_captions(val_references)
            absent = [i for i in ids if i not in references_val]
            if absent:
                raise ValueError(f"{val_references}: no references for {len(absent)} clip(s) of {val_features}, "
                                 f"e.g. {absent[:3]}")
            (alpha, weight), tried = choose_decoding(ids, hyps, vocab, references_val, length_norms=grid["length_norm"],
                                                     weights=grid["rerank_weight"], similarity=similarity)
            settings = {"length_norm": alpha, "rerank_weight": weight}
            record["validation_cider_d"] = [{"length_norm": a, "rerank_weight": w, "cider_d": round(c, 4)}
                                            for (a, w), c in tried.items()]
            record["chosen_on"] = str(val_features)
            no_rerank = max((k for k in tried if k[1] == 0.0), key=lambda k: (tried[k], -k[0]), default=None)
        else:
            no_rerank = (float(length_norm), 0.0)
        ids, hyps = store_hypotheses(scorer, store, vocab, **decoding)
        similarity = None if reranker is None else store_similarity(reranker, store, ids, hyps, vocab)

    def choose(alpha: float, weight: float) -> dict[str, str]:
        return captions_of(ids, hyps, vocab, float(alpha), weight * similarity if weight else None)

    settings = {k: float(v) for k, v in settings.items()}
    predictions = choose(settings["length_norm"], settings["rerank_weight"])
    write_predictions(predictions, out, csv)
    record.update(settings)
    if variants:
        record["variants"] = {"plain": {"length_norm": 0.0, "rerank_weight": 0.0}}
        if reranker is not None and no_rerank is not None:
            record["variants"]["no_rerank"] = {"length_norm": float(no_rerank[0]), "rerank_weight": 0.0}
        for name, chosen in record["variants"].items():
            write_predictions(choose(chosen["length_norm"], 0.0), variant_path(out, name))
    write_text_atomic(decoding_record_path(out), json.dumps(record, indent=1) + "\n")
    result: dict[str, object] = {"clips": len(predictions), "cider_d": None, **settings}
    if references is not None:
        refs = load_captions(references)
        absent = [i for i in predictions if i not in refs]
        if absent:
            raise ValueError(f"{references}: no references for {len(absent)} clip(s), e.g. {absent[:3]}")
        result["cider_d"] = score_cider(predictions, refs)
    return result


def variant_path(out: str | Path, name: str) -> Path:
    """Where :func:`decode` writes the variant ``name`` of ``out``: ``<out stem>.<name>.json`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{name}.json")


if __name__ == "__main__":
    run(decode, "captioning.decode")
