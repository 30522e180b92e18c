"""Forward throughput of the project's cnn14 against panns_inference's Cnn14 on the same input, same run.

    python benchmarks/bench_encoder.py --batch 8 --seconds 10 --runs 5

Eval mode, ``torch.inference_mode``, warm-up runs, median of ``runs``; prints clips/s and the ratio (goal >= 0.9).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import fire
import torch
from timing import interleaved_medians

from features.encoders import build_audio_encoder


def load_reference_models() -> types.ModuleType:
    """Import ``panns_inference/models.py`` without running the package ``__init__`` (which fetches files)."""
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or spec.origin is None:
        raise SystemExit("panns_inference is not installed (pip install panns-inference --no-deps)")
    package = types.ModuleType("_panns_reference")
    package.__path__ = [str(Path(spec.origin).parent)]
    sys.modules["_panns_reference"] = package
    return importlib.import_module("_panns_reference.models")


def main(batch: int = 8, seconds: float = 10.0, runs: int = 5, warmup: int = 2, threads: int | None = None) -> float:
    """Print clips/s for both models and return ours / reference."""
    if threads:
        torch.set_num_threads(threads)
    models = load_reference_models()
    torch.manual_seed(0)
    ref = models.Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                       classes_num=527).eval()
    ours = build_audio_encoder("cnn14").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    wave = torch.randn(batch, int(32000 * seconds)) * 0.1
    with torch.inference_mode():
        t_ours, t_ref = interleaved_medians([lambda: ours(wave), lambda: ref(wave)], runs, warmup)
    ours_cps, ref_cps = batch / t_ours, batch / t_ref
    ratio = ours_cps / ref_cps
    print(f"input: {batch} x {seconds:g} s at 32 kHz, {torch.get_num_threads()} threads, median of {runs}")
    print(f"project cnn14          : {ours_cps:7.2f} clips/s")
    print(f"panns_inference Cnn14  : {ref_cps:7.2f} clips/s")
    print(f"ratio (goal >= 0.9)    : {ratio:7.3f}")
    return ratio


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
