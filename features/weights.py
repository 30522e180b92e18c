"""Load and save audio-encoder weights; strict by default, errors name the file and the bad keys.

Accepted checkpoint formats (all read with ``weights_only=True``):

- project audio encoder: ``{"kind": "audio_encoder", "model_args": {"name": ..., **kwargs}, "state_dict": ...}``,
  written by :func:`save_audio_encoder` (``retrieval.train`` writes one, ``audio_encoder.pt``, beside ``best.pt``);
- official PANNs: ``{"model": state_dict}`` (``name`` required; sample rate inferred from the STFT size);
- official BEATs: ``{"cfg": dict, "model": state_dict}`` (``name`` "beats" or None; built from its ``cfg``).

HTS-AT (``htsat``) comes from LAION-CLAP checkpoints, which hold a whole bi-encoder: ``python -m retrieval.clap``
converts one into a retrieval checkpoint and this format; given here unconverted, it is refused with that advice.
A retrieval checkpoint (kind ``"retrieval"``, the whole bi-encoder) is refused: its layout belongs to the retrieval
stage, whose output for later stages is ``audio_encoder.pt``.

Long audio is windowed by the encoder itself, chosen once when it is loaded: :func:`load_audio_encoder` gives encoders
that take ``chunk_seconds`` (the PANNs CNNs) a window of :data:`CHUNK_SECONDS` unless told otherwise; AST always
windows at its own input length.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from common.checkpoint import load_state_dict_checked, read_torch_file, refuse_non_finite
from common.io import atomic_write
from features.encoders import AUDIO_ENCODERS, AudioEncoder, build_audio_encoder
from features.encoders.beats import official_spec_and_state

AUDIO_ENCODER_FILE = "audio_encoder.pt"  # the stage contract: what extraction, inference and bundles read
CHUNK_SECONDS = 10.0  # window for long audio in extraction, inference and search; 0 or None = whole clips
# PANNs' STFT size -> sample rate of the official checkpoints (1024 at 32 kHz, 512 for the 16 kHz models).
PANNS_RATE_BY_WINDOW = {1024: 32000, 512: 16000}


def chunked_spec(spec: Mapping[str, Any], chunk_seconds: float | None) -> dict[str, Any]:
    """``spec`` windowing long audio every ``chunk_seconds`` (0 or None: whole clips), for encoders that take that
    argument; other encoders' specs (and unknown names, refused when built) are returned unchanged."""
    spec = dict(spec)
    builder = AUDIO_ENCODERS.get(spec.get("name"))
    if builder is None or "chunk_seconds" not in inspect.signature(builder).parameters:
        return spec
    spec.pop("chunk_seconds", None)
    if chunk_seconds:
        spec["chunk_seconds"] = float(chunk_seconds)
    return spec


def _spec_and_state(ckpt: Any, path: Path, name: str | None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Recognise the checkpoint format -> (encoder spec as saved, encoder state dict)."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"Checkpoint {path} is a {type(ckpt).__name__}, expected a dict")
    kind = ckpt.get("kind")
    if kind == "retrieval":
        raise ValueError(f"Checkpoint {path} is a retrieval checkpoint (the whole bi-encoder), not an audio encoder; "
                         f"pass the audio_encoder.pt that retrieval.train writes beside it")
    if kind == "audio_encoder":
        try:
            spec, state = dict(ckpt["model_args"]), ckpt["state_dict"]
            saved_name = spec["name"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"Checkpoint {path} of kind 'audio_encoder' lacks {err} "
                             "(needs model_args with a name, and state_dict)") from None
        if name is not None and name != saved_name:
            raise ValueError(f"Checkpoint {path} holds encoder {saved_name!r}, but {name!r} was asked for")
        return spec, state
    if kind is None and "cfg" in ckpt:  # official BEATs
        if name not in (None, "beats"):
            raise ValueError(f"Checkpoint {path} is an official BEATs checkpoint, but {name!r} was asked for")
        return official_spec_and_state(ckpt, str(path))
    if kind is None and isinstance(ckpt.get("model"), dict):  # official PANNs
        if name is None:
            raise ValueError(f"Checkpoint {path} is an official PANNs checkpoint: give the encoder name "
                             f"(e.g. 'cnn14', 'wavegram_logmel_cnn14')")
        state = ckpt["model"]
        spec: dict[str, Any] = {"name": name}
        mel = state.get("logmel_extractor.melW")
        if isinstance(mel, Tensor) and (mel.shape[0] - 1) * 2 in PANNS_RATE_BY_WINDOW:
            spec["sample_rate"] = PANNS_RATE_BY_WINDOW[(mel.shape[0] - 1) * 2]
        return spec, state
    if _is_laion_clap(ckpt):
        raise ValueError(f"Checkpoint {path} is a LAION-CLAP checkpoint (audio and text branches): convert it once "
                         f"with 'python -m retrieval.clap {path} --text_encoder ROBERTA_DIR --out DIR/best.pt', "
                         f"which writes DIR/audio_encoder.pt beside it")
    raise ValueError(f"Unrecognised checkpoint {path}: expected kind 'audio_encoder', an official PANNs dict with a "
                     f"'model' state dict or an official BEATs dict with 'cfg' and 'model'; found keys "
                     f"{sorted(map(str, ckpt))}")


def _is_laion_clap(ckpt: dict) -> bool:
    state = ckpt.get("state_dict", ckpt)
    return isinstance(state, dict) and any(str(k).removeprefix("module.").startswith("audio_branch.") for k in state)


def encoder_from_state(spec: Mapping[str, Any], state: Mapping[str, Tensor], source: str, *,
                       strict: bool = True) -> AudioEncoder:
    """``build_audio_encoder(**spec)`` holding the weights ``state`` (errors name ``source``); in eval mode."""
    if strict:  # every weight comes from the file: skip random initialisation (about 1 s for a full CNN14)
        with torch.device("meta"):
            encoder = build_audio_encoder(**spec)
        load_state_dict_checked(encoder, state, source, strict=True, assign=True)
        if not any(t.is_meta for t in itertools.chain(encoder.parameters(), encoder.buffers())):
            return encoder.eval()
    encoder = build_audio_encoder(**spec)  # non-strict, or an encoder with state outside its state dict
    load_state_dict_checked(encoder, state, source, strict=strict)
    return encoder.eval()


def load_audio_encoder(path: str | os.PathLike, name: str | None = None, *,
                       chunk_seconds: float | None = CHUNK_SECONDS, strict: bool = True,
                       **kwargs: Any) -> AudioEncoder:
    """Build an encoder from a checkpoint (a format above) and load its weights; returned in eval mode.

    Args:
        path: the checkpoint file.
        name: registered encoder name; needed for official PANNs checkpoints, checked against the others.
        chunk_seconds: window for long audio, for encoders that take one (0 or None: whole clips).
        strict: every weight must be in the file, with its shape, and nothing else.
        kwargs: override the saved arguments (e.g. ``width`` or ``sample_rate`` of an official checkpoint).
    """
    path = Path(path)
    spec, state = _spec_and_state(read_torch_file(path, "audio-encoder checkpoint", numpy_scalars=True), path, name)
    refuse_non_finite(state, str(path))
    return encoder_from_state(chunked_spec({**spec, **kwargs}, chunk_seconds), state, str(path), strict=strict)


def save_audio_encoder(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Write ``{"kind": "audio_encoder", "model_args": encoder.spec, "state_dict": ...}`` atomically."""
    spec = getattr(encoder, "spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError("Encoder has no 'spec' (build it with build_audio_encoder to save it)")
    if hasattr(encoder, "rebuild_spec"):
        spec = encoder.rebuild_spec(spec)  # e.g. AST from a local folder: store its config, not the folder
    ckpt = {"kind": "audio_encoder", "model_args": dict(spec),
            "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}
    with atomic_write(path, "wb") as f:
        torch.save(ckpt, f)


def weights_sha256(state: Mapping[str, Tensor]) -> str:
    """Hex SHA-256 of a state dict's contents (names, dtypes, shapes, values), however it was saved: the same
    encoder weights give the same digest in an ``audio_encoder.pt``, inside a retrieval checkpoint or a bundle. A
    feature store records its encoder's (``encoder_weights_sha256``), so a re-ranker can check that its own audio
    encoder made the store's clip vectors."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def checkpoint_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints can be hundreds of MB)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Checkpoint not found: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
