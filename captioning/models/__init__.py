"""Caption models chosen by name: an encoder registry, a decoder registry, and the :class:`Captioner` joining them."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from captioning.models.encoder import BiGRUEncoder
from captioning.models.gru import AttentionGRUDecoder
from captioning.models.transformer import TransformerCaptionDecoder
from common.dropout import use_fast_dropout

ENCODERS: dict[str, type[nn.Module]] = {"bigru": BiGRUEncoder}
DECODERS: dict[str, type[nn.Module]] = {"transformer": TransformerCaptionDecoder, "gru": AttentionGRUDecoder}


class Captioner(nn.Module):
    """Encoder + decoder. ``forward(frames [B,T,D], frame_lengths [B], tokens [B,L]) -> {"logits": [B,L,V]}``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.encoder(frames, frame_lengths)

    def forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor, tokens: torch.Tensor,
                tf_prob: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        enc = self.encode(frames, frame_lengths)
        return {"logits": self.decoder.forward_scheduled(enc, tokens, tf_prob, generator)}


def _make(registry: dict[str, type[nn.Module]], kind: str, name: str, args: dict[str, Any], **fixed: Any) -> nn.Module:
    if name not in registry:
        raise KeyError(f"unknown {kind} '{name}' (valid: {', '.join(sorted(registry))})")
    cls = registry[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"} - set(fixed)
    unknown = set(args) - accepted
    if unknown:
        raise ValueError(f"{kind} '{name}': unknown argument(s) {sorted(unknown)} (valid: {sorted(accepted)})")
    return cls(**fixed, **args)


def build_captioner(model_args: dict[str, Any]) -> Captioner:
    """Build from plain data: ``encoder``, ``encoder_args``, ``decoder``, ``decoder_args``, ``frame_dim``,
    ``vocab_size`` (this dict is what checkpoints store as ``model_args``)."""
    encoder = _make(ENCODERS, "encoder", model_args["encoder"], dict(model_args.get("encoder_args") or {}),
                    frame_dim=int(model_args["frame_dim"]))
    decoder = _make(DECODERS, "decoder", model_args["decoder"], dict(model_args.get("decoder_args") or {}),
                    vocab_size=int(model_args["vocab_size"]), memory_dim=encoder.out_dim)
    return use_fast_dropout(Captioner(encoder, decoder))  # the same model, a cheaper dropout mask on CPUs


__all__ = ["ENCODERS", "DECODERS", "Captioner", "build_captioner", "BiGRUEncoder", "TransformerCaptionDecoder",
           "AttentionGRUDecoder"]
