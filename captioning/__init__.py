"""Captioning: vocabulary, caption data over HDF5 feature stores, BiGRU encoder with Transformer or attention-GRU
decoders, cross-entropy and SCST training (``python -m captioning.train``), batched beam search over one model or
an ensemble (``python -m captioning.decode``).

Public pieces are imported on first use: a command's ``--help`` does not wait for torch."""
from common.lazy import lazy_exports

_PUBLIC = {
    "Vocabulary": "vocab", "tokenize": "vocab",
    "CaptionPairs": "data", "Clips": "data", "collate": "data", "load_captions": "data", "open_checked_store": "data",
    "ENCODERS": "models", "DECODERS": "models", "Captioner": "models", "build_captioner": "models",
    "Ensemble": "search", "beam_search": "search",
    "load_captioner": "checkpoint", "model_checkpoint": "checkpoint",
}
__all__ = list(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
