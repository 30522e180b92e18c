"""Audio encoders by registered name: waveform (B, N) -> {"frames", "frame_lengths", "clip", ...}.

Every encoder is an ``nn.Module`` with ``sample_rate``, ``frame_dim`` (D), ``clip_dim``, ``frame_hop`` (input
samples per output frame), ``num_frames(lengths)`` and ``spec`` (``{"name": ..., **kwargs}``, enough to rebuild
it with ``build_audio_encoder(**spec)``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Protocol, runtime_checkable

from torch import Tensor, nn

from features.encoders.ast import AstEncoder
from features.encoders.beats import BeatsEncoder
from features.encoders.htsat import HtsatEncoder
from features.encoders.panns import PANNS_ARCHS, PannsCnn


@runtime_checkable
class AudioEncoder(Protocol):
    """What the rest of the project may rely on."""

    sample_rate: int
    frame_dim: int
    clip_dim: int
    frame_hop: int
    spec: dict[str, Any]

    def num_frames(self, lengths: Tensor) -> Tensor: ...

    def __call__(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]: ...


AUDIO_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(PannsCnn, name) for name in PANNS_ARCHS},
    "ast": AstEncoder,
    "beats": BeatsEncoder,
    "htsat": HtsatEncoder,
}


def build_audio_encoder(name: str, **kwargs: Any) -> AudioEncoder:
    """Build the encoder registered as ``name`` with keyword arguments; records them in ``encoder.spec``."""
    if name not in AUDIO_ENCODERS:
        raise KeyError(f"Unknown audio encoder {name!r}; valid names: {sorted(AUDIO_ENCODERS)}")
    encoder = AUDIO_ENCODERS[name](**kwargs)
    encoder.spec = {"name": name, **kwargs}
    return encoder


def encoder_spec(section: dict[str, Any]) -> dict[str, Any]:
    """A config's ``audio_encoder`` section as :func:`build_audio_encoder` arguments: unset (None) options dropped
    (the encoder's own defaults apply), its ``args`` (any further arguments) merged in."""
    return {**{k: v for k, v in section.items() if v is not None and k != "args"}, **(section.get("args") or {})}


__all__ = ["AUDIO_ENCODERS", "AudioEncoder", "AstEncoder", "BeatsEncoder", "HtsatEncoder", "PannsCnn",
           "build_audio_encoder", "encoder_spec"]
