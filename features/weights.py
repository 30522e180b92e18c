"""Load and save audio-encoder weights; strict by default, errors name the file and the bad keys.

Accepted checkpoint formats (all read with ``weights_only=True``):

- official PANNs: ``{"model": state_dict}`` (``name`` required; sample rate inferred from the STFT size);
- stage-1 retrieval: ``{"kind": "retrieval", "model_args": {"audio_encoder": {"name": ..., **kwargs}, ...},
  "state_dict": {"audio_encoder.<key>": ..., ...}}``;
- project audio encoder: ``{"kind": "audio_encoder", "model_args": {"name": ..., **kwargs}, "state_dict": ...}``,
  written by ``save_audio_encoder``.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from common.checkpoint import load_state_dict_checked
from features.encoders import AudioEncoder, build_audio_encoder

RETRIEVAL_PREFIX = "audio_encoder."
# PANNs' STFT size -> sample rate of the official checkpoints (1024 at 32 kHz, 512 for the 16 kHz models).
PANNS_RATE_BY_WINDOW = {1024: 32000, 512: 16000}


def _read(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Audio-encoder checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated, corrupt or code-carrying files
        raise ValueError(f"Cannot read audio-encoder checkpoint {path}: {type(err).__name__}: {err}") from err


def _spec_and_state(ckpt: Any, path: Path, name: str | None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Recognise the checkpoint format -> (encoder spec without overrides, encoder state dict)."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"Checkpoint {path} is a {type(ckpt).__name__}, expected a dict")
    kind = ckpt.get("kind")
    if kind in ("retrieval", "audio_encoder"):
        try:
            spec = ckpt["model_args"]["audio_encoder"] if kind == "retrieval" else ckpt["model_args"]
            state = ckpt["state_dict"]
            spec = dict(spec)
            saved_name = spec.pop("name")
        except (KeyError, TypeError) as err:
            raise ValueError(f"Checkpoint {path} of kind {kind!r} lacks {err} (needs model_args and state_dict)")
        if kind == "retrieval":
            state = {k[len(RETRIEVAL_PREFIX):]: v for k, v in state.items() if k.startswith(RETRIEVAL_PREFIX)}
            if not state:
                raise ValueError(f"Retrieval checkpoint {path} has no '{RETRIEVAL_PREFIX}*' weights")
        if name is not None and name != saved_name:
            raise ValueError(f"Checkpoint {path} holds encoder {saved_name!r}, but {name!r} was asked for")
        return {"name": saved_name, **spec}, state
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
    raise ValueError(f"Unrecognised checkpoint {path}: expected kind 'retrieval' or 'audio_encoder', "
                     f"or an official PANNs dict with a 'model' state dict; found keys {sorted(map(str, ckpt))}")


def load_audio_encoder(path: str | os.PathLike, name: str | None = None, *, strict: bool = True,
                       **kwargs: Any) -> AudioEncoder:
    """Build an encoder from a checkpoint (any format above) and load its weights; ``kwargs`` override the saved
    arguments (e.g. ``chunk_seconds``, or ``sample_rate`` for an official checkpoint). Returned in eval mode."""
    path = Path(path)
    spec, state = _spec_and_state(_read(path), path, name)
    spec = {**spec, **kwargs}
    if strict:  # every weight comes from the file: skip random initialisation (about 1 s for a full CNN14)
        with torch.device("meta"):
            encoder = build_audio_encoder(**spec)
        load_state_dict_checked(encoder, state, str(path), strict=True, assign=True)
        if not any(t.is_meta for t in itertools.chain(encoder.parameters(), encoder.buffers())):
            return encoder.eval()
    encoder = build_audio_encoder(**spec)  # non-strict, or an encoder with state outside its state dict
    load_state_dict_checked(encoder, state, str(path), strict=strict)
    return encoder.eval()


def save_audio_encoder(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Write ``{"kind": "audio_encoder", "model_args": encoder.spec, "state_dict": ...}`` atomically."""
    spec = getattr(encoder, "spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError("Encoder has no 'spec' (build it with build_audio_encoder to save it)")
    if hasattr(encoder, "rebuild_spec"):
        spec = encoder.rebuild_spec(spec)  # e.g. AST from a local folder: store its config, not the folder
    ckpt = {"kind": "audio_encoder", "model_args": dict(spec),
            "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
