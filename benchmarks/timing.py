"""What the forward benchmarks share: wall time, peak memory, interleaved medians, the reference folder."""
from __future__ import annotations

import ctypes
import os
import statistics
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def reference_folder(name: str) -> Path:
    """``shared/reference/<name>`` beside the checkout (``$AACTK_REFERENCE`` moves it); exits where absent."""
    folder = Path(os.environ.get("AACTK_REFERENCE") or REPO.parent / "shared" / "reference") / name
    if not folder.is_dir():
        raise SystemExit(f"The reference code is not at {folder} (set AACTK_REFERENCE)")
    return folder


def elapsed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(fns: list[Callable[[], object]], runs: int, warmup: int) -> list[float]:
    """Median seconds of each of ``fns``, run in turn ``runs`` times after ``warmup`` rounds, so that drifting
    machine load hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            t.append(elapsed(fn))
    return [statistics.median(t) for t in times]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_mib(fn: Callable[[], object]) -> float | None:
    """Resident-set high-water mark during ``fn()`` above the resident set before it, in MiB (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed blocks back, so the next peak is counted
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _status_kib("VmRSS")
    except OSError:
        return None
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:7.0f} MiB"
