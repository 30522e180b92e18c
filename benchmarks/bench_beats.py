"""Forward throughput and peak memory of the project's BEATs against the official code, same weights, same input.

    python benchmarks/bench_beats.py --batch 8 --seconds 10 --runs 3

The published shape (12 layers, 768 wide, gated relative position bias, DeepNorm) with random weights: the official
model is built, and the project's encoder loads its ``{"cfg", "model"}`` checkpoint strictly. Both take the same
waveforms; the official code's torchaudio fbank (no build here) is replaced by the project's fbank, which it calls
clip by clip as its ``preprocess`` does. Eval mode, ``torch.inference_mode``, warm-up runs, median of ``runs``,
the two models interleaved so drifting machine load hits both alike. Peak memory is the resident-set high-water
mark above the resident set before one forward (Linux ``/proc``; "n/a" elsewhere).
The official code lives in ``shared/reference/beats`` beside the checkout (``$AACTK_REFERENCE`` moves it).
"""
from __future__ import annotations

import ctypes
import importlib
import os
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Callable

import fire
import torch

from features.encoders.beats import BEATS_FBANK, BEATS_PUBLISHED, BeatsEncoder
from features.kaldi import fbank

REPO = Path(__file__).resolve().parents[1]


def load_reference() -> types.ModuleType:
    """Import the official ``BEATs.py`` (bare-name imports, torchaudio stubbed) with the project's fbank."""
    folder = Path(os.environ.get("AACTK_REFERENCE") or REPO.parent / "shared" / "reference") / "beats"
    if not (folder / "BEATs.py").is_file():
        raise SystemExit(f"The official BEATs code is not at {folder} (set AACTK_REFERENCE)")
    stubs = {name: types.ModuleType(name) for name in
             ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi")}
    stubs["torchaudio"].compliance = stubs["torchaudio.compliance"]
    stubs["torchaudio.compliance"].kaldi = stubs["torchaudio.compliance.kaldi"]
    sys.path.insert(0, str(folder))
    for name, module in stubs.items():
        sys.modules.setdefault(name, module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its deprecated weight_norm
        module = importlib.import_module("BEATs")
    sys.path.remove(str(folder))
    module.ta_kaldi = types.SimpleNamespace(fbank=lambda w, **_: fbank(w / 2 ** 15, None, BEATS_FBANK)[0][0])
    return module


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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


def main(batch: int = 8, seconds: float = 10.0, runs: int = 3, warmup: int = 1, threads: int | None = None) -> float:
    """Print clips/s and peak memory of both models and return ours / official (clips/s)."""
    if threads:
        torch.set_num_threads(threads)
    reference = load_reference()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = reference.BEATs(reference.BEATsConfig(BEATS_PUBLISHED)).eval()
    ours = BeatsEncoder.from_official({"cfg": BEATS_PUBLISHED, "model": ref.state_dict()}, "official BEATs")
    wave = torch.randn(batch, int(16000 * seconds)) * 0.1
    run_ours, run_ref = (lambda: ours(wave)), (lambda: ref.extract_features(wave))
    with torch.inference_mode():
        diff = (ours(wave)["frames"] - ref.extract_features(wave)[0].view(batch, -1, 8, 768).mean(2)).abs().max()
        t_ours, t_ref = [], []
        for _ in range(warmup):
            run_ours(), run_ref()
        for _ in range(runs):
            t_ours.append(_seconds(run_ours))
            t_ref.append(_seconds(run_ref))
        mem_ours, mem_ref = peak_mib(run_ours), peak_mib(run_ref)
        t_fbank = statistics.median(_seconds(lambda: fbank(wave, None, BEATS_FBANK)) for _ in range(runs))
    ours_cps, ref_cps = batch / statistics.median(t_ours), batch / statistics.median(t_ref)
    ratio = ours_cps / ref_cps
    mib = lambda m: "n/a" if m is None else f"{m:7.0f} MiB"  # noqa: E731
    print(f"input: {batch} x {seconds:g} s at 16 kHz, {torch.get_num_threads()} threads, median of {runs}; "
          f"max |frames - official| {float(diff):.1e}; fbank alone {batch / t_fbank:.0f} clips/s")
    print(f"project beats   : {ours_cps:7.2f} clips/s, peak {mib(mem_ours)} above the model")
    print(f"official BEATs  : {ref_cps:7.2f} clips/s, peak {mib(mem_ref)} above the model")
    print(f"ratio (goal >= 0.9): {ratio:7.3f}")
    return ratio


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
