"""Caption a feature store with one model or an ensemble: JSON predictions, a DCASE submission CSV, scores.

    python -m captioning.decode --checkpoints exp/a/averaged.pt,exp/b/averaged.pt --features eval.h5 \
        --out pred.json --csv submission.csv --beam_size 3 --references data/eval/captions.json \
        [--length_norm auto --val_features val.h5 --val_references data/val]
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from captioning.checkpoint import load_captioner
from captioning.data import Clips, collate, load_captions, open_checked_store
from captioning.search import Ensemble, beam_search, beam_search_by_length_norm
from captioning.vocab import Vocabulary, tokenize
from common import checkpoint_paths
from common.io import write_csv, write_text_atomic
from common.cli import run
from common.tensor import module_device
from features.store import FeatureStore


def caption_clips(scorer: Ensemble, store: FeatureStore, vocab: Vocabulary, audio_ids: Sequence[str] | None = None,
                  *, beam_size: int = 3, max_len: int = 30, min_len: int = 1, length_norm: float = 0.0,
                  batch_size: int = 32) -> dict[str, str]:
    """``{audio_id: caption}`` for ``audio_ids`` (default: every clip of ``store``), decoded in batches."""
    return caption_clips_by_length_norm(scorer, store, vocab, audio_ids, beam_size=beam_size, max_len=max_len,
                                        min_len=min_len, length_norms=[length_norm], batch_size=batch_size)[0]


def caption_clips_by_length_norm(scorer: Ensemble, store: FeatureStore, vocab: Vocabulary,
                                 audio_ids: Sequence[str] | None = None, *, beam_size: int = 3, max_len: int = 30,
                                 min_len: int = 1, length_norms: Sequence[float] = (0.0,),
                                 batch_size: int = 32) -> list[dict[str, str]]:
    """:func:`caption_clips` for each of ``length_norms``, from one beam search (the norm only picks among its
    finished hypotheses)."""
    for model in scorer.models:
        model.eval()
    loader = DataLoader(Clips(store, audio_ids), batch_size=batch_size, shuffle=False, collate_fn=collate)
    outs: list[dict[str, str]] = [{} for _ in length_norms]
    device = module_device(scorer.models[0])
    for batch in loader:
        picks = beam_search_by_length_norm(scorer, batch["frames"].to(device), batch["frame_lengths"].to(device),
                                           bos=vocab.bos, eos=vocab.eos, pad=vocab.pad, beam_size=beam_size,
                                           max_len=max_len, min_len=min_len, length_norms=length_norms)
        for out, words in zip(outs, picks):
            out.update(zip(batch["audio_ids"], (vocab.decode(w) for w in words)))
    return outs


def caption_frames(scorer: Ensemble, frames: torch.Tensor, frame_lengths: torch.Tensor, vocab: Vocabulary, *,
                   beam_size: int = 3, max_len: int = 30, min_len: int = 1, length_norm: float = 0.0) -> list[str]:
    """One caption per clip of a padded batch: ``frames`` [B, T, D], ``frame_lengths`` [B] -> B captions."""
    words = beam_search(scorer, frames, frame_lengths, bos=vocab.bos, eos=vocab.eos, pad=vocab.pad,
                        beam_size=beam_size, max_len=max_len, min_len=min_len, length_norm=length_norm)
    return [vocab.decode(w) for w in words]


def score_cider(predictions: dict[str, str], references: dict[str, list[str]]) -> float:
    """Corpus CIDEr-D of ``predictions`` against ``references``, both tokenized like the vocabulary."""
    from eval.cider_d import cider_d

    ids = list(predictions)
    corpus, _ = cider_d([" ".join(tokenize(predictions[i])) for i in ids],
                        [[" ".join(tokenize(r)) for r in references[i]] for i in ids], tokenize=False)
    return corpus["cider_d"]


def load_ensemble(checkpoints: Sequence[str | Path]) -> tuple[Ensemble, Vocabulary, dict]:
    """Load checkpoints that share one vocabulary and one kind of features; returns the ensemble, the vocabulary
    and the first checkpoint's ``feature_attrs``."""
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
        models.append(model)
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


def choose_length_norm(scorer: Ensemble, vocab: Vocabulary, store: FeatureStore, references: dict[str, list[str]],
                       **decoding: Any) -> tuple[float, dict[float, float]]:
    """The alpha of :data:`LENGTH_NORMS` whose captions of ``store`` score the highest CIDEr-D against ``references``
    (the smallest among ties), and every alpha's score. Plain sums of log-probabilities favour short captions: an
    unsure model ends early (captions about half the references' length), which normalisation by length undoes."""
    absent = [i for i in store.ids if i not in references]
    if absent:
        raise ValueError(f"{store.path}: no validation references for {len(absent)} clip(s), e.g. {absent[:3]}")
    captions = caption_clips_by_length_norm(scorer, store, vocab, length_norms=LENGTH_NORMS, **decoding)
    scores = {alpha: score_cider(c, references) for alpha, c in zip(LENGTH_NORMS, captions)}
    return max(scores, key=lambda a: (scores[a], -a)), scores


def decoding_record_path(out: str | Path) -> Path:
    """Where :func:`decode` records how it decoded ``out``: ``<out stem>.decoding.json`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.decoding.json")


def decode(checkpoints: str | Sequence[str], features: str, out: str, csv: str | None = None, beam_size: int = 3,
           max_len: int = 30, min_len: int = 1, length_norm: float | str = 0.0, batch_size: int = 32,
           references: str | None = None, val_features: str | None = None,
           val_references: str | None = None) -> dict[str, object]:
    """Caption every clip of the feature store ``features`` and write ``out`` (JSON) and ``csv`` (DCASE format).

    Args:
        checkpoints: one captioner checkpoint, or several (comma-separated) sharing a vocabulary: their
            log-probabilities are averaged at every step of one beam search (decoders may differ).
        features: HDF5 feature store; it must come from the encoder the checkpoints were trained on.
        out: predictions as JSON ``[{"audio_id", "caption"}]``; how they were decoded (the settings, and with
            ``auto`` every alpha's validation CIDEr-D) goes to ``<out stem>.decoding.json`` beside it.
        csv: optional DCASE submission CSV ``file_name,caption_predicted``.
        beam_size: beams per clip (1 = greedy). max_len/min_len: words per caption.
        length_norm: alpha of ``score / length ** alpha`` when choosing among finished beams (0 = none), or
            ``auto``: the alpha of 0, 0.5, 1, 1.5, 2 with the best CIDEr-D on ``val_features`` against
            ``val_references`` (a split folder or ``captions.json``), never on the evaluation split.
        references: optional ``captions.json`` or split folder; when given, CIDEr-D is computed and returned.
    Returns ``{"clips": n, "cider_d": score or None, "length_norm": alpha}``.
    """
    if length_norm == "auto" and not (val_features and val_references):
        raise ValueError("--length_norm auto chooses on the validation split: give --val_features and --val_references")
    if length_norm != "auto" and not isinstance(length_norm, (int, float)):
        raise ValueError(f"Invalid length_norm. (expected a number >= 0 or 'auto', found {length_norm!r})")
    scorer, vocab, attrs = load_ensemble(checkpoint_paths(checkpoints))
    expect = {k: v for k, v in attrs.items() if k != "checkpoint_sha256" or v}
    store = open_checked_store(features, expect=expect)
    decoding = {"beam_size": beam_size, "max_len": max_len, "min_len": min_len, "batch_size": batch_size}
    record: dict[str, Any] = {"checkpoints": [str(p) for p in checkpoint_paths(checkpoints)], **decoding}
    with torch.inference_mode():
        if length_norm == "auto":
            length_norm, tried = choose_length_norm(scorer, vocab, open_checked_store(val_features, expect=expect),
                                                    load_captions(val_references), **decoding)
            record["length_norm_validation_cider_d"] = {str(a): round(c, 4) for a, c in tried.items()}
            record["chosen_on"] = str(val_features)
        predictions = caption_clips(scorer, store, vocab, length_norm=float(length_norm), **decoding)
    write_predictions(predictions, out, csv)
    record["length_norm"] = float(length_norm)
    write_text_atomic(decoding_record_path(out), json.dumps(record, indent=1) + "\n")
    result: dict[str, object] = {"clips": len(predictions), "cider_d": None, "length_norm": float(length_norm)}
    if references is not None:
        refs = load_captions(references)
        absent = [i for i in predictions if i not in refs]
        if absent:
            raise ValueError(f"{references}: no references for {len(absent)} clip(s), e.g. {absent[:3]}")
        result["cider_d"] = score_cider(predictions, refs)
    return result


if __name__ == "__main__":
    run(decode, "captioning.decode")
