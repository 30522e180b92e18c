"""Throughput of the project's Kaldi fbank and of AST from raw audio against the references, same run.

    python benchmarks/bench_kaldi.py [--batch 16] [--seconds 10] [--runs 5] [--ast-batch 4] [--memory True]

1. fbank: ``features.kaldi.fbank`` on one zero-padded batch of clips of ``seconds / 2`` to ``seconds`` at 16 kHz
   (float32; float64 is what AST's front end uses), against kaldi-native-fbank one clip at a time, frames read
   out as it gives them. Kaldi's defaults (Povey window, 2**15 scale) with 80 bins, the most Kaldi accepts at
   16 kHz; torch with all threads and with one (kaldi-native-fbank uses one).
2. AST, a small config (hidden 192, 4 layers) on the published 128 x 1024 grid: the project's encoder from
   waveforms against ``ASTFeatureExtractor`` + the same ``ASTModel``; the largest difference of the pooled output
   is printed as a check.

Median of ``runs``, interleaved so drifting machine load hits both sides alike; clips/s and ratios ours /
reference (> 1: ours is faster). With ``--memory``, fresh processes report their peak resident memory: one that
only sets up (imports, model, clips), one that also runs ours once, one the reference. ``--threads`` sets torch's
threads (default: torch's choice); on a machine whose cores are busy with other work, more threads can be slower.
"""
from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import fire
import numpy as np
import torch

from features.kaldi import FbankConfig, fbank

RATE = 16000
FBANK = FbankConfig(num_mel_bins=80, waveform_scale=2.0 ** 15)
AST_SMALL = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768)


def make_clips(batch: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """``batch`` clips of noise and two tones, ``seconds / 2`` to ``seconds`` long, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(batch):
        n = int(RATE * seconds * rng.uniform(0.5, 1.0))
        t = np.arange(n) / RATE
        x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        clips.append((x + 0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    return clips


def padded(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips -> zero-padded (B, N) float32 and lengths (B,)."""
    lengths = torch.tensor([len(c) for c in clips])
    wave = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        wave[i, :len(c)] = torch.from_numpy(c)
    return wave, lengths


def knf_fbank(clips: list[np.ndarray]) -> list[np.ndarray]:
    """kaldi-native-fbank, one clip at a time: (T_i, 80) each."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = FBANK.num_mel_bins
    out = []
    for x in clips:
        online = knf.OnlineFbank(opts)
        online.accept_waveform(RATE, x * FBANK.waveform_scale)
        online.input_finished()
        out.append(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))
    return out


def ast_sides(batch: int, seconds: float) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(ours, reference) AST forwards on the same clips and weights; each returns the pooled output (B, H)."""
    from transformers import ASTFeatureExtractor
    from transformers.utils import logging

    from features.encoders import build_audio_encoder

    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="At least one mel filter")  # bank 3 of 128 is empty, as in Kaldi
    torch.manual_seed(0)
    encoder = build_audio_encoder("ast", **AST_SMALL).eval()
    extractor = ASTFeatureExtractor()
    clips = make_clips(batch, seconds, seed=1)
    wave, lengths = padded(clips)

    def ours() -> torch.Tensor:
        return encoder(wave, lengths)["clip"]

    def reference() -> torch.Tensor:
        values = extractor(clips, sampling_rate=RATE, return_tensors="pt")["input_values"]
        return encoder.model(input_values=values).pooler_output

    return ours, reference


def fbank_sides(batch: int, seconds: float, dtype: torch.dtype = torch.float32) -> dict[str, Callable[[], Any]]:
    clips = make_clips(batch, seconds)
    wave, lengths = padded(clips)
    wave = wave.to(dtype)
    return {"ours": lambda: fbank(wave, lengths, FBANK), "reference": lambda: knf_fbank(clips)}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(sides: dict[str, Callable[[], Any]], runs: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each side, calls interleaved."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in sides.values():
                fn()
        for _ in range(runs):
            for name, fn in sides.items():
                times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def _peak_child(part: str, side: str, batch: int, seconds: float, threads: int, queue: Any) -> None:
    """In a fresh process: set up ``part``, run ``side`` once ("none": set-up only), report peak RSS (MB)."""
    torch.set_num_threads(threads)
    if part == "ast":
        ours, reference = ast_sides(batch, seconds)
        fn = {"ours": ours, "reference": reference}.get(side)
    else:
        fn = fbank_sides(batch, seconds).get(side)
    if fn is not None:
        with torch.inference_mode():
            fn()
    queue.put(peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): ``VmHWM`` where /proc has it, since Linux carries the parent's
    high-water mark into ``ru_maxrss`` across fork and exec; else ``resource.getrusage``."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20 if sys.platform == "darwin" else 1024)  # bytes on macOS, KB on Linux


def peak_mb(part: str, batch: int, seconds: float, threads: int) -> dict[str, float]:
    """Peak resident memory (MB) of a fresh process that sets up ``part`` and runs nothing / ours / the reference."""
    ctx = multiprocessing.get_context("spawn")
    peaks = {}
    for side in ("none", "ours", "reference"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_peak_child, args=(part, side, batch, seconds, threads, queue))
        proc.start()
        peaks[side] = queue.get()
        proc.join()
    return peaks


def print_peaks(peaks: dict[str, float], reference: str) -> None:
    print(f"  peak RSS of a fresh process: set-up only {peaks['none']:.0f} MB, + project run "
          f"{peaks['ours']:.0f} MB, + {reference} run {peaks['reference']:.0f} MB")


def main(batch: int = 16, seconds: float = 10.0, runs: int = 5, ast_batch: int = 4, ast_runs: int = 3,
         memory: bool = True, threads: int | None = None) -> dict[str, float]:
    """Print clips/s of both sides and the ratios; return the ratios (ours / reference)."""
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    ratios = {}
    print(f"fbank: {batch} clips of {seconds / 2:g}-{seconds:g} s at 16 kHz, 80 bins, median of {runs}")
    settings = [("float32", threads, torch.float32), ("float64", threads, torch.float64)]
    if threads > 1:
        settings.insert(1, ("float32", 1, torch.float32))  # kaldi-native-fbank runs on one thread
    for label, n_threads, dtype in settings:
        torch.set_num_threads(n_threads)
        t = interleaved(fbank_sides(batch, seconds, dtype), runs)
        ours, ref = batch / t["ours"], batch / t["reference"]
        key = f"fbank {label}, {n_threads} thread{'s' if n_threads > 1 else ''}"
        ratios[key] = ours / ref
        print(f"  {key:28s}: project {ours:8.1f} clips/s, kaldi-native-fbank {ref:7.1f} clips/s, "
              f"ratio {ours / ref:5.2f}")
    torch.set_num_threads(threads)
    if memory:
        print_peaks(peak_mb("fbank", batch, seconds, threads), "kaldi-native-fbank")

    print(f"AST {AST_SMALL} on 128 x 1024: {ast_batch} clips of {seconds / 2:g}-{seconds:g} s, {threads} threads, "
          f"median of {ast_runs}")
    ours_fn, ref_fn = ast_sides(ast_batch, seconds)
    with torch.inference_mode():
        diff = float((ours_fn() - ref_fn()).abs().max())
    t = interleaved({"ours": ours_fn, "reference": ref_fn}, ast_runs)
    ours, ref = ast_batch / t["ours"], ast_batch / t["reference"]
    ratios["ast"] = ours / ref
    print(f"  project encoder              : {ours:8.2f} clips/s")
    print(f"  ASTFeatureExtractor + ASTModel: {ref:7.2f} clips/s")
    print(f"  ratio                        : {ours / ref:8.2f}   (max |pooled difference| {diff:.1e})")
    if memory:
        print_peaks(peak_mb("ast", ast_batch, seconds, threads), "transformers")
    return ratios


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
