"""Where models run: the one reading of a device name, for every trainer (``train.device``) and every command that
runs a model (``--device``)."""
from __future__ import annotations

import os

import torch


def resolve_device(name: str, option: str = "device") -> torch.device:
    """``name`` as a device: ``auto`` is this process's GPU when there is one, else the CPU; ``cuda`` without an
    index is this process's GPU too (``LOCAL_RANK`` under torchrun: each process its own); a GPU asked for where
    there is none is refused. ``option`` names the setting in errors."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option}: unknown {name!r} (valid: auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option}: {name!r}, but torch sees no GPU here (torch {torch.__version__}); use cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{option}: {name!r} is not supported (valid: auto, cpu, cuda, cuda:N)")
    return device
