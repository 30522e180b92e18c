"""Captioning: vocabulary, caption data over HDF5 feature stores, BiGRU encoder with Transformer or attention-GRU
decoders, cross-entropy and SCST training (``python -m captioning.train``), batched beam search over one model or
an ensemble (``python -m captioning.decode``)."""
from captioning.checkpoint import load_captioner, model_checkpoint
from captioning.data import CaptionPairs, Clips, collate, load_captions, open_checked_store
from captioning.models import DECODERS, ENCODERS, Captioner, build_captioner
from captioning.search import Ensemble, beam_search
from captioning.vocab import Vocabulary, tokenize

__all__ = ["Vocabulary", "tokenize", "CaptionPairs", "Clips", "collate", "load_captions", "open_checked_store",
           "ENCODERS", "DECODERS", "Captioner", "build_captioner", "Ensemble", "beam_search", "load_captioner",
           "model_checkpoint"]
