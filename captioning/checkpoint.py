"""Captioner checkpoints as plain data: ``kind="captioner"``, ``model_args``, ``vocab`` (list of words),
``feature_attrs`` (what made the features it was trained on) and ``state_dict``; training checkpoints add more."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from captioning.models import Captioner, build_captioner
from captioning.vocab import Vocabulary
from common.checkpoint import load_checkpoint, refuse_non_finite

FEATURE_KEYS = ("encoder", "checkpoint_sha256", "frame_dim")


def model_checkpoint(model: nn.Module, model_args: dict[str, Any], vocab: Vocabulary,
                     feature_attrs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The minimal checkpoint that :func:`load_captioner` rebuilds a model from (plus ``extra`` entries)."""
    return {"kind": "captioner", "model_args": dict(model_args), "vocab": list(vocab.words),
            "feature_attrs": {k: feature_attrs[k] for k in FEATURE_KEYS if k in feature_attrs},
            "state_dict": model.state_dict(), **extra}


def build_with_vocab(model_args: dict[str, Any], words: list[str]) -> tuple[Captioner, Vocabulary]:
    """A captioner (random trained weights) and its vocabulary from what a checkpoint stores; a prefix-LM captioner
    loads its LM from the folder ``model_args`` names (refused if not the one it was trained with) and its
    "vocabulary" is the LM tokenizer's. The model keeps ``model_args``."""
    if model_args.get("family") == "prefix_lm":
        from captioning.models.prefix_lm import build_prefix_lm

        model, vocab = build_prefix_lm(model_args)
    else:
        model, vocab = build_captioner(model_args), Vocabulary(words)
    model.model_args = dict(model_args)
    return model, vocab


def load_captioner(path: str | Path) -> tuple[Captioner, Vocabulary, dict[str, Any]]:
    """Rebuild a captioner in eval mode from a checkpoint; returns ``(model, vocab, checkpoint)``.

    Weights load strictly: a missing or unexpected key is a ValueError naming the file. The model keeps the
    arguments it was built from as ``model.model_args`` (as audio encoders keep ``spec``), so it can be saved again.
    A prefix-LM captioner (``model_args["family"] == "prefix_lm"``) loads its LM from the folder it names, refused if
    it is not the one it was trained with, and holds only the trained weights; its "vocabulary" is the LM
    tokenizer's (:class:`~captioning.models.prefix_lm.LMVocabulary`).
    """
    checkpoint = load_checkpoint(path, kind="captioner")
    model, vocab = build_with_vocab(checkpoint["model_args"], checkpoint["vocab"])
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the model they describe ({err})") from None
    refuse_non_finite(checkpoint["state_dict"], str(path))
    return model.eval(), vocab, checkpoint
