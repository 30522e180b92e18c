"""Evaluation: caption metrics (pycocoevalcap wrappers, a fast CIDEr-D for SCST rewards), retrieval metrics and
audio question answering accuracy (:mod:`eval.qa`).

Every caption metric has the signature ``(candidates: list[str], mult_references: list[list[str]], *, ...)`` and
returns ``(corpus_scores: dict[str, float], sentence_scores: dict[str, list[float]])``.
"""
from ._java import JavaError
from .bleu import bleu
from .cider_d import cider_d
from .fast_cider import FastCiderD, fast_cider_d
from .meteor import meteor
from .retrieval import (clotho_text_to_audio, ranking_metrics, ranking_metrics_from_chunks, retrieval_metrics,
                        retrieval_metrics_from_embeddings)
from .rouge_l import rouge_l
from .spice import SPICE_LIB_ENV, MetricUnavailableError, spice
from .spider import spider
from .tokenizer import ptb_tokenize, simple_tokenize

_FROM_CAPTIONS = ("ALL_METRICS", "CaptionReport", "caption_metrics", "evaluate_files")
_FROM_QA = ("majority_baseline", "normalise_answer", "read_qa", "score_answers")


def __getattr__(name: str):
    # Imported on first use so that `python -m eval.captions` (or eval.qa) does not find its module already loaded.
    if name in _FROM_CAPTIONS:
        from . import captions

        return getattr(captions, name)
    if name in _FROM_QA:
        from . import qa

        return getattr(qa, name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")


__all__ = [
    "ALL_METRICS", "CaptionReport", "FastCiderD", "JavaError", "MetricUnavailableError", "SPICE_LIB_ENV",
    "bleu", "caption_metrics", "cider_d", "clotho_text_to_audio", "evaluate_files", "fast_cider_d",
    "majority_baseline", "meteor", "normalise_answer", "ptb_tokenize", "ranking_metrics", "ranking_metrics_from_chunks",
    "read_qa", "retrieval_metrics", "retrieval_metrics_from_embeddings", "rouge_l", "score_answers",
    "simple_tokenize", "spice", "spider",
]
