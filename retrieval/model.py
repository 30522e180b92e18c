"""The bi-encoder: audio and captions projected into one space, compared by cosine similarity / temperature.

``model_args`` (stored in every retrieval checkpoint) is what :func:`build_model` needs::

    {"audio_encoder": {"name": "cnn10", "width": 0.25, "sample_rate": 16000, ...},
     "text_encoder": {"name": "minilm", "pooling": "mean", "max_length": 32, ...},
     "embed_dim": 256, "init_temperature": 0.07, "min_temperature": 0.01,
     "projection": "linear", "transforms": False}

(the last two may be absent: those are their defaults). Audio encoder parameters live under ``audio_encoder.`` in
the state dict. Later stages never read this layout: a retrieval checkpoint (:func:`model_checkpoint`) goes with
the model's audio encoder alone as :data:`AUDIO_ENCODER_FILE` (``features.weights``' format) beside it, the file
feature extraction, inference and bundles read.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.checkpoint import load_checkpoint, load_state_dict_checked, refuse_non_finite
from common.device import resolve_device
from features.encoders import build_audio_encoder
from features.weights import AUDIO_ENCODER_FILE, chunked_spec  # noqa: F401 - the stage contract, named here too
from common.text_encoder import TextEncoder, TextEncoderFilesError, build_text_encoder

MAX_TEMPERATURE = 1.0
PROJECTIONS = ("linear", "mlp")


def _projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """``linear``: one Linear; ``mlp``: Linear, ReLU, Linear (CLAP's projections; keys ``.0.`` and ``.2.``)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


def _transform(dim: int) -> nn.Sequential:
    """CLAP's MLPLayers([E, E, E]): Linear, ReLU, Dropout(0.1), Linear (keys ``.0.`` and ``.3.``)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, dim))


class BiEncoder(nn.Module):
    """Audio encoder + text encoder + projections + L2 normalisation + learnable temperature.

    The temperature is learnt as its logarithm, initialised at ``init_temperature`` and clamped to
    ``[min_temperature, 1]`` when used (the lower bound keeps logits bounded, as in CLIP).

    Args:
        projection: ``linear`` (one Linear per modality) or ``mlp`` (Linear, ReLU, Linear, as LAION-CLAP).
        transforms: add LAION-CLAP's training-only heads: ``audio_transform`` and ``text_transform`` (MLPs on the
            unit embeddings) and a second temperature ``log_temperature_t``. CLAP's loss contrasts audio embeddings
            with transformed text embeddings at ``temperature``, and transformed audio embeddings with text
            embeddings at ``temperature_t``. Embeddings, search and evaluation never use them, nor does
            ``retrieval.train``'s InfoNCE; they exist so that a published CLAP checkpoint loads whole and strictly.
    """

    def __init__(self, audio_encoder: nn.Module, text_encoder: TextEncoder, embed_dim: int = 256,
                 init_temperature: float = 0.07, min_temperature: float = 0.01, projection: str = "linear",
                 transforms: bool = False) -> None:
        super().__init__()
        if not 0 < min_temperature <= init_temperature <= MAX_TEMPERATURE:
            raise ValueError(f"Invalid temperature. (expected 0 < min_temperature <= init_temperature <= "
                             f"{MAX_TEMPERATURE}, found {min_temperature}, {init_temperature})")
        if projection not in PROJECTIONS:
            raise ValueError(f"Invalid projection. (expected one of {PROJECTIONS}, found {projection!r})")
        if not isinstance(transforms, bool):
            raise ValueError(f"Invalid transforms. (expected true or false, found {transforms!r})")
        self.audio_encoder = audio_encoder
        if hasattr(audio_encoder, "fc_audioset"):  # the tagging head is unused here: keep it out of training
            audio_encoder.fc_audioset.requires_grad_(False)
        self.text_encoder = text_encoder
        self.audio_proj = _projection(projection, int(audio_encoder.clip_dim), embed_dim)
        self.text_proj = _projection(projection, text_encoder.dim, embed_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.transforms = transforms
        if transforms:
            self.audio_transform, self.text_transform = _transform(embed_dim), _transform(embed_dim)
            self.log_temperature_t = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.min_temperature = float(min_temperature)
        self.sample_rate: int = int(audio_encoder.sample_rate)

    def _clamped(self, log_temperature: Tensor) -> Tensor:
        return log_temperature.exp().clamp(self.min_temperature, MAX_TEMPERATURE)

    @property
    def temperature(self) -> Tensor:
        """The clamped temperature (scalar tensor, differentiable inside the bounds)."""
        return self._clamped(self.log_temperature)

    @property
    def temperature_t(self) -> Tensor:
        """The second clamped temperature, of the transformed audio embeddings (``transforms`` only)."""
        if not self.transforms:
            raise ValueError("temperature_t: this bi-encoder has no transforms (built with transforms=False)")
        return self._clamped(self.log_temperature_t)

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
        """One pass over paired audio and captions -> ``{"audio": [B, E], "text": [B, E], "temperature": []}``;
        with ``transforms``, also ``"audio_mlp"``, ``"text_mlp"`` [B, E] and ``"temperature_t"`` []."""
        out = {"audio": self.embed_audio(waveform, lengths), "text": self.embed_text(input_ids, attention_mask),
               "temperature": self.temperature}
        if self.transforms:
            out.update(audio_mlp=self.audio_transform(out["audio"]), text_mlp=self.text_transform(out["text"]),
                       temperature_t=self.temperature_t)
        return out


def build_model(model_args: dict[str, Any], pretrained: bool = True) -> BiEncoder:
    """Build a :class:`BiEncoder` from ``model_args`` (see the module docstring); the dict is not modified.

    ``pretrained=False`` builds the text encoder from its config alone, for callers that load every weight right
    after: reading the pretrained weights would be wasted, and the folder need not hold them. It is the caller's
    choice, never part of ``model_args``, so a checkpoint's arguments always mean the same model.
    """
    args = copy.deepcopy(dict(model_args))
    for key in ("audio_encoder", "text_encoder", "embed_dim"):
        if key not in args:
            raise ValueError(f"Invalid model_args. (missing '{key}', found keys {sorted(args)})")
    audio_args = dict(args.pop("audio_encoder"))
    text_args = dict(args.pop("text_encoder"))
    if "pretrained" in text_args:
        raise ValueError("Invalid model_args. (text_encoder.pretrained is not a model argument: whether pretrained "
                         "weights are read is the caller's choice)")
    audio_encoder = build_audio_encoder(audio_args.pop("name"), **audio_args)
    text_encoder = build_text_encoder(**text_args, pretrained=pretrained)
    return BiEncoder(audio_encoder, text_encoder, **args)


def model_checkpoint(model: BiEncoder, model_args: dict[str, Any]) -> dict[str, Any]:
    """The plain-data retrieval checkpoint of ``model`` that :func:`load_model` reads (training adds its own
    state to it); ``model_args`` must be what ``model`` was built from."""
    return {"kind": "retrieval", "model_args": model_args, "state_dict": model.state_dict()}


def load_model(path: str | os.PathLike, chunk_seconds: float | None = None,
               device: str | torch.device = "cpu") -> BiEncoder:
    """Rebuild the model of a retrieval checkpoint file and load its weights strictly (eval mode, on ``device``:
    :func:`common.device.resolve_device`); a weight that does not fit is a ValueError naming the file and the keys.
    ``chunk_seconds`` (0/None: whole clips, as training validates) makes the audio encoder window long audio as
    feature extraction does (same weights)."""
    where = resolve_device(device)
    return model_from_checkpoint(load_checkpoint(path, kind="retrieval"), path, chunk_seconds).to(where)


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike,
                          chunk_seconds: float | None = None) -> BiEncoder:
    """:func:`load_model` of a retrieval checkpoint already read from ``path``."""
    args = dict(checkpoint["model_args"])
    if chunk_seconds:
        args["audio_encoder"] = chunked_spec(args["audio_encoder"], chunk_seconds)
    try:
        model = build_model(args, pretrained=False)  # every weight comes from the checkpoint
    except TextEncoderFilesError as err:  # the arguments are fine, this machine lacks the files they name
        raise TextEncoderFilesError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: model_args do not describe a bi-encoder ({err})") from None
    refuse_non_finite(checkpoint["state_dict"], str(path))
    load_state_dict_checked(model, checkpoint["state_dict"], str(path), strict=True)
    return model.eval()
