"""Checkpoints are data, not code: tensors, numbers, strings, lists and dicts, loaded with ``weights_only=True``.

Every project checkpoint is a dict with at least ``kind`` (``audio_encoder``, ``retrieval``, ``captioner``),
``model_args`` (what the model builder needs to rebuild it) and ``state_dict``. Training checkpoints add
``config``, ``optimizer``, ``scheduler``, ``rng``, ``epoch`` and ``history`` so a run can resume.
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from common.io import atomic_write

_MAX_LISTED = 20


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a kill during the write leaves the previous file (or none), never half a file."""
    with atomic_write(path, "wb") as f:
        torch.save(checkpoint, f)


def checkpoint_paths(value: str | Sequence[str | os.PathLike], what: str = "checkpoints") -> list[str]:
    """Paths (of checkpoints, or any files ``what`` names) given as a comma-separated string or a list (or the
    tuple the command line makes of one); an empty list or entry is a ValueError."""
    paths = [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(p) for p in value]
    if not paths or not all(paths):
        raise ValueError(f"Invalid {what}. (expected one or more paths, comma-separated, found {value!r})")
    return paths


def _numpy_scalar_globals() -> list[Any]:
    """What unpickling a NumPy number needs: ``scalar`` (under NumPy 1's and 2's module names) rebuilds it from a
    dtype and raw bytes, and the numeric dtype classes (never ``object``); no other code can run through them."""
    scalar = np.dtype("f8").type(0).__reduce__()[0]
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *sorted(dtypes, key=str)]


def read_torch_file(path: str | Path, what: str = "checkpoint", numpy_scalars: bool = False,
                    mmap: bool = False) -> Any:
    """``torch.load`` as data only (``weights_only=True``, on the CPU); every failure is a one-line ValueError
    naming the file: missing, truncated or not a torch file, or holding Python objects (code is never run).

    ``numpy_scalars`` also accepts NumPy numbers (e.g. a learning rate some training loops store in their optimizer
    state, as LAION-CLAP's published checkpoints do): data rebuilt from a dtype and bytes, no code.

    ``mmap`` maps the tensors' bytes from the file instead of reading them, for a caller that wants a checkpoint's
    plain data rather than its weights."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals() if numpy_scalars else []):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:  # torch's message advises weights_only=False: never repeat that
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise ValueError(f"{path}: not a readable {what} (not a torch file)") from None
        raise ValueError(f"{path}: refused: the {what} holds Python objects ({found.group(1)}) besides tensors "
                         "and plain data (checkpoints are read as data, never run as code)") from None
    except Exception as err:  # torch raises many types for truncated, corrupt or foreign files
        reason = " ".join(str(err).split()).split(". ")[0][:200]  # torch's first sentence says what failed
        raise ValueError(f"{path}: not a readable {what} (truncated, corrupt or not a torch file: "
                         f"{type(err).__name__}: {reason})") from None


def load_checkpoint(path: str | Path, kind: str | None = None, mmap: bool = False) -> dict[str, Any]:
    """Load a project checkpoint safely; ``kind`` (if given) must match the checkpoint's own; ``mmap`` as for
    :func:`read_torch_file`."""
    path = Path(path)
    checkpoint = read_torch_file(path, mmap=mmap)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "kind" not in checkpoint:
        raise ValueError(f"{path}: not a project checkpoint (expected a dict with 'kind' and 'state_dict')")
    if kind is not None and checkpoint["kind"] != kind:
        raise ValueError(f"{path}: is a '{checkpoint['kind']}' checkpoint, expected '{kind}'")
    return checkpoint


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch random states as plain data (numpy's as its legacy tuple, made of lists)."""
    np_state = np.random.get_state()
    return {
        "python": _python_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _shape(t: Any) -> tuple[int, ...] | str:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _listed(keys: list[str]) -> str:
    more = f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def refuse_non_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """ValueError naming ``source`` when any floating tensor of ``state_dict`` holds NaN or inf: such weights give
    NaN scores, embeddings and frames (or one word for every clip) without any error."""
    broken = [k for k, v in state_dict.items() if isinstance(v, Tensor) and v.is_floating_point()
              and not bool(v.isfinite().all())]
    if broken:
        raise ValueError(f"{source}: weights are not finite (NaN or inf) in {len(broken)} tensor(s), e.g. "
                         f"{broken[:3]}; the run that wrote them diverged")


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, Any], source: str,
                            strict: bool = True, assign: bool = False) -> None:
    """Load ``state_dict`` into ``module``; if strict, any missing, unexpected or mis-shaped key is a ValueError
    naming ``source`` and the keys (with shapes). Non-strict loads only the keys whose shapes match. ``assign``
    makes the module hold the given tensors (cast to the module's dtypes) instead of copying into its own, which
    is how a module built on the meta device gets its weights."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict) if _shape(state_dict[k]) != _shape(own[k]))
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listed(unexpected)}")
        if mismatched:
            parts.append("shape mismatches: " + _listed(
                [f"{k} (checkpoint {_shape(state_dict[k])} vs model {_shape(own[k])})" for k in mismatched]))
        raise ValueError(f"Checkpoint {source} does not fit {type(module).__name__}: " + "; ".join(parts))
    usable = {k: v for k, v in state_dict.items() if k in own and k not in mismatched}
    if assign:
        usable = {k: v.to(own[k].dtype) if isinstance(v, Tensor) else v for k, v in usable.items()}
    module.load_state_dict(usable, strict=False, assign=assign)
