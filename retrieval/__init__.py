"""Stage 1: audio-text retrieval. A bi-encoder (audio encoder from ``features`` + a ``transformers`` text encoder
from ``common.text_encoder``, which the prefix-LM captioners' prompt encoder shares)
trained with symmetric InfoNCE; evaluation (R@k, mAP@10, ensembles), search and zero-shot classification;
published LAION-CLAP checkpoints converted into the same format.

Commands: ``python -m retrieval.train``, ``python -m retrieval.evaluate``, ``python -m retrieval.search``,
``python -m retrieval.zeroshot``, ``python -m retrieval.clap``.
Public pieces are imported on first use, so running a command module does not import it twice.
"""
from common.lazy import lazy_exports

_PUBLIC = {
    "BiEncoder": "model", "build_model": "model", "load_model": "model",
    "info_nce": "loss",
    "train": "train",
    "evaluate": "evaluate", "evaluate_model": "evaluate", "ensemble_similarity": "evaluate",
    "search_text": "search", "search_audio": "search", "zero_shot": "zeroshot",
    "load_clap": "clap",
}
__all__ = list(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
