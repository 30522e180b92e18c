"""Atomic writes: a reader (or a rerun after a kill or a full disk) sees the old file or the whole new one.

Every file the project writes goes through :func:`atomic_write`: the data goes to ``.<name>.tmp<pid>`` in the same
folder, is flushed to disk (``fsync``) and renamed onto ``<name>``. A failure on the way (no space left, a kill
signal turned into an exception) removes the temporary file and leaves any previous ``<name>`` untouched.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name this process writes ``path`` under (hidden, same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` "w": UTF-8 text, "wb": bytes) that replaces ``path`` when the
    block ends without an error. The folder is created if missing."""
    if mode not in ("w", "wb"):
        raise ValueError(f"Invalid mode. (expected 'w' or 'wb', found {mode!r})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def remove_stale_temps(folder: str | os.PathLike, name: str) -> None:
    """Delete temporary files of ``name`` left in ``folder`` by processes that no longer run (a live process may
    still be writing its own)."""
    for tmp in Path(folder).glob(f".{name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
