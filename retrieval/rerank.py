"""Re-ranking caption candidates by the retrieval model's audio-text similarity (SLAM-AAC's CLAP-Refine).

A captioner's beam search ends with several finished captions per clip; the retrieval model of the first stage
scores each against its clip, and decoding picks by ``log-probability / length ** alpha + weight * similarity``
(``captioning.decode --rerank``, ``captioning.infer``, bundles, the server). The audio side needs no audio: it is the
retrieval model's projection of the clip vector its own audio encoder wrote, in the feature store or at inference,
so a :class:`Reranker` refuses clip vectors from any other encoder (``features.weights.weights_sha256``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common import load_checkpoint, load_state_dict_checked
from common.device import resolve_device
from common.tensor import module_device
from features.weights import weights_sha256
from retrieval.embed import text_embeddings
from retrieval.model import BiEncoder, build_model, model_from_checkpoint

ENCODER_PREFIX = "audio_encoder."


class Reranker:
    """A retrieval model used to score caption candidates against clip vectors of its own audio encoder."""

    def __init__(self, model: BiEncoder, model_args: Mapping[str, Any], source: str):
        self.model = model.eval().requires_grad_(False)
        self.model_args = dict(model_args)
        self.source = source
        self.encoder_weights_sha256 = weights_sha256(model.audio_encoder.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Reranker":
        """The retrieval checkpoint ``path`` (``best.pt`` of ``retrieval.train``, or a published CLAP one), on
        ``device``."""
        checkpoint = load_checkpoint(path, kind="retrieval")
        model = model_from_checkpoint(checkpoint, path).to(resolve_device(device))
        return cls(model, checkpoint["model_args"], str(path))

    def check_encoder(self, weights_sha256: str | None, what: str) -> None:
        """Refuse clip vectors (of a feature store, a bundle's encoder: ``what``) made by another audio encoder."""
        if weights_sha256 != self.encoder_weights_sha256:
            found = f"weights sha256 {weights_sha256}" if weights_sha256 else "no record of its encoder's weights"
            raise ValueError(f"{what}: its clip vectors are not from re-ranker {self.source}'s audio encoder ({found}, "
                             f"expected {self.encoder_weights_sha256}); re-rank with the retrieval model whose "
                             "audio_encoder.pt made them (stores extracted before this check existed: extract again)")

    @torch.no_grad()
    def similarities(self, clips: Tensor, captions: Sequence[Sequence[str]]) -> Tensor:
        """Clip vectors [B, D_clip] of this model's audio encoder and K candidate captions per clip -> cosine
        similarities [B, K] (float32, on the CPU)."""
        if len(captions) != clips.shape[0] or len({len(c) for c in captions}) > 1:
            raise ValueError(f"similarities: expected K captions for each of {clips.shape[0]} clips")
        audio = self.model.audio_proj(clips.to(module_device(self.model), torch.float32))
        audio = F.normalize(audio.float(), dim=-1).cpu()  # as BiEncoder.embed_audio: (B, E)
        unique = list(dict.fromkeys(c for cs in captions for c in cs))  # a beam often repeats itself
        text = dict(zip(unique, text_embeddings(self.model, unique)))
        return torch.stack([torch.stack([text[c] for c in cs]) @ a for cs, a in zip(captions, audio)])

    def bundle_part(self) -> dict[str, Any]:
        """What a caption bundle keeps of this model: all but the audio encoder, which is the bundle's own."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items() if not k.startswith(ENCODER_PREFIX)}
        return {"model_args": self.model_args, "state_dict": state, "source": os.path.basename(self.source)}


def reranker_from_bundle(part: Mapping[str, Any], audio_encoder: nn.Module, source: str) -> Reranker:
    """Rebuild the :class:`Reranker` a bundle holds (:meth:`Reranker.bundle_part`) around the bundle's encoder."""
    try:
        args, state = dict(part["model_args"]), dict(part["state_dict"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{source}: not a complete re-ranker (lacks {err})") from None
    try:
        model = build_model(args, pretrained=False)  # every weight comes from the bundle
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: model_args do not describe a bi-encoder ({err})") from None
    model.audio_encoder = audio_encoder
    state.update({ENCODER_PREFIX + k: v for k, v in audio_encoder.state_dict().items()})
    load_state_dict_checked(model, state, source, strict=True)
    return Reranker(model, args, source)
