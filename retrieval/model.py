"""The bi-encoder: audio and captions projected into one space, compared by cosine similarity / temperature.

``model_args`` (stored in every retrieval checkpoint) is what :func:`build_model` needs::

    {"audio_encoder": {"name": "cnn10", "width": 0.25, "sample_rate": 16000, ...},
     "text_encoder": {"name": "minilm", "pooling": "mean", "max_length": 32, ...},
     "embed_dim": 256, "init_temperature": 0.07, "min_temperature": 0.01}

Audio encoder parameters live under ``audio_encoder.`` in the state dict. Later stages never read this layout:
``retrieval.train`` writes the best model's audio encoder alone as ``audio_encoder.pt`` (``features.weights``'
format) for feature extraction, inference and bundles.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.checkpoint import load_checkpoint, load_state_dict_checked
from features.encoders import build_audio_encoder
from features.weights import chunked_spec
from retrieval.text import TextEncoder, build_text_encoder

MAX_TEMPERATURE = 1.0


class BiEncoder(nn.Module):
    """Audio encoder + text encoder + linear projections + L2 normalisation + learnable temperature.

    The temperature is learnt as its logarithm, initialised at ``init_temperature`` and clamped to
    ``[min_temperature, 1]`` when used (the lower bound keeps logits bounded, as in CLIP).
    """

    def __init__(self, audio_encoder: nn.Module, text_encoder: TextEncoder, embed_dim: int = 256,
                 init_temperature: float = 0.07, min_temperature: float = 0.01) -> None:
        super().__init__()
        if not 0 < min_temperature <= init_temperature <= MAX_TEMPERATURE:
            raise ValueError(f"Invalid temperature. (expected 0 < min_temperature <= init_temperature <= "
                             f"{MAX_TEMPERATURE}, found {min_temperature}, {init_temperature})")
        self.audio_encoder = audio_encoder
        if hasattr(audio_encoder, "fc_audioset"):  # the tagging head is unused here: keep it out of training
            audio_encoder.fc_audioset.requires_grad_(False)
        self.text_encoder = text_encoder
        self.audio_proj = nn.Linear(int(audio_encoder.clip_dim), embed_dim)
        self.text_proj = nn.Linear(text_encoder.dim, embed_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.min_temperature = float(min_temperature)
        self.sample_rate: int = int(audio_encoder.sample_rate)

    @property
    def temperature(self) -> Tensor:
        """The clamped temperature (scalar tensor, differentiable inside the bounds)."""
        return self.log_temperature.exp().clamp(self.min_temperature, MAX_TEMPERATURE)

    def embed_audio(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``waveform`` [B, N] at ``sample_rate`` (``lengths`` [B] valid samples) -> unit vectors [B, E]."""
        clip = self.audio_encoder(waveform, lengths)["clip"]  # (B, D_clip)
        return F.normalize(self.audio_proj(clip), dim=-1)  # (B, E)

    def embed_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token ids and mask [B, L] -> unit vectors [B, E]."""
        pooled = self.text_encoder(input_ids, attention_mask)  # (B, H)
        return F.normalize(self.text_proj(pooled), dim=-1)  # (B, E)

    def forward(self, waveform: Tensor, lengths: Tensor | None, input_ids: Tensor,
                attention_mask: Tensor) -> dict[str, Tensor]:
        """One pass over paired audio and captions -> ``{"audio": [B, E], "text": [B, E], "temperature": []}``."""
        return {"audio": self.embed_audio(waveform, lengths), "text": self.embed_text(input_ids, attention_mask),
                "temperature": self.temperature}


def build_model(model_args: dict[str, Any]) -> BiEncoder:
    """Build a :class:`BiEncoder` from ``model_args`` (see the module docstring); the dict is not modified."""
    args = copy.deepcopy(dict(model_args))
    for key in ("audio_encoder", "text_encoder", "embed_dim"):
        if key not in args:
            raise ValueError(f"Invalid model_args. (missing '{key}', found keys {sorted(args)})")
    audio_args = dict(args.pop("audio_encoder"))
    audio_encoder = build_audio_encoder(audio_args.pop("name"), **audio_args)
    text_encoder = build_text_encoder(**args.pop("text_encoder"))
    return BiEncoder(audio_encoder, text_encoder, **args)


def load_model(path: str | os.PathLike, chunk_seconds: float | None = None) -> BiEncoder:
    """Rebuild the model of a retrieval checkpoint file and load its weights strictly (eval mode); a weight that
    does not fit is a ValueError naming the file and the keys. ``chunk_seconds`` (0/None: whole clips, as training
    validates) makes the audio encoder window long audio as feature extraction does (same weights)."""
    checkpoint = load_checkpoint(path, kind="retrieval")
    args = dict(checkpoint["model_args"])
    if chunk_seconds:
        args["audio_encoder"] = chunked_spec(args["audio_encoder"], chunk_seconds)
    try:
        model = build_model(args)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: model_args do not describe a bi-encoder ({err})") from None
    load_state_dict_checked(model, checkpoint["state_dict"], str(path), strict=True)
    return model.eval()
