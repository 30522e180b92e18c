"""Throughput of ``features.extract`` against a bare panns_inference Cnn14 forward loop on the same clips, same run.

    python benchmarks/bench_extract.py [--clips 32] [--seconds 10] [--batch-size 8] [--workers 1] [--runs 2]

Both sides use the same full-width CNN14 weights (random, seeded: no pretrained weights can be had offline) at
32 kHz. The clips are 32 kHz WAV files (10 s cuts of the real clotho_mini audio beside the checkout, else synthetic
noise and tones), so extraction reads files but need not resample. The bare loop gets the same waveforms already in
memory, batched the same way (longest first), and only runs the forward. The extraction side is the whole command:
checkpoint load and hash, background audio reading, forward, part files and store assembly. Best of ``runs``,
interleaved; the ratio extract / bare is the figure (goal >= 0.9: the pipeline adds no overhead). The command's
fixed start-up (about 0.5 s for a 330 MB CNN14 checkpoint: hash, load, STFT matrices) is spread over ``clips``; a
real split of thousands of clips spreads it further than the default 32 do.
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from features.audio import load_audio
from features.extract import extract
from features.manifest import AudioEntry, Manifest, write_manifest
from features.store import open_store

REPO = Path(__file__).resolve().parents[1]

RATE = 32000


def reference_models() -> types.ModuleType | None:
    """``panns_inference/models.py`` loaded under a stand-in package, so the real ``__init__`` (which runs wget)
    never runs; None when panns_inference is not installed."""
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or spec.origin is None:
        return None
    stand_in = types.ModuleType("_panns_ref")
    stand_in.__path__ = [str(Path(spec.origin).parent)]  # relative imports resolve here; __init__ is skipped
    sys.modules["_panns_ref"] = stand_in
    return importlib.import_module("_panns_ref.models")


def make_clips(folder: Path, n: int, seconds: float) -> list[AudioEntry]:
    """``n`` clips of ``seconds`` at 32 kHz: cuts of real audio when available, else seeded noise and tones."""
    real = sorted((REPO.parent / "shared" / "data" / "clotho_mini" / "audio").glob("*.wav"))
    sources = [load_audio(p, RATE) for p in real]
    rng = np.random.default_rng(0)
    length = int(seconds * RATE)
    entries = []
    for i in range(n):
        if sources:
            src = sources[i % len(sources)]
            start = (i // len(sources)) * RATE % max(1, len(src) - length)
            wave = np.resize(src[start:start + length], length)
        else:
            t = np.arange(length) / RATE
            wave = 0.1 * rng.standard_normal(length) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        path = folder / f"clip {i:03d}.wav"
        sf.write(path, wave.astype(np.float32), RATE, subtype="FLOAT")
        entries.append(AudioEntry(f"clip {i:03d}", str(path), seconds, RATE, 1))
    return entries


def main(clips: int = 32, seconds: float = 10.0, batch_size: int = 8, workers: int = 1, runs: int = 2) -> float:
    """Print clips/s of both and return the ratio extract / bare loop (0.0 when panns_inference is missing)."""
    models = reference_models()
    if models is None:
        print("skipped: panns_inference is not installed (pip install panns-inference --no-deps)")
        return 0.0
    torch.manual_seed(0)
    ref = models.Cnn14(sample_rate=RATE, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                       classes_num=527).eval()
    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        entries = make_clips(work, clips, seconds)
        split = write_manifest(Manifest("bench", entries, {}), work / "manifest")
        ckpt = work / "cnn14_official_format.pth"
        torch.save({"model": ref.state_dict()}, ckpt)  # the layout PANNs publishes

        waves = [torch.from_numpy(load_audio(e.path, RATE)) for e in entries]
        batches = [torch.stack(waves[i:i + batch_size]) for i in range(0, len(waves), batch_size)]  # (B, N)

        def bare() -> None:
            with torch.inference_mode():
                for batch in batches:
                    ref(batch)["embedding"]

        def pipeline(k: int) -> None:
            out = work / f"run{k}.h5"
            extract(str(split), str(ckpt), str(out), encoder="cnn14", batch_size=batch_size, chunk_seconds=None,
                    dtype="float32", workers=workers, progress=False)
            assert len(open_store(out)) == clips

        bare()  # warm-up: first-call kernel selection
        t_bare, t_pipe = [], []
        for k in range(runs):
            start = time.perf_counter()
            bare()
            t_bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline(k)
            t_pipe.append(time.perf_counter() - start)
        bare_cps, pipe_cps = clips / min(t_bare), clips / min(t_pipe)
        ratio = pipe_cps / bare_cps
        print(f"input: {clips} clips x {seconds:g} s at 32 kHz, batch {batch_size}, {workers} reader worker(s), "
              f"{torch.get_num_threads()} torch threads, best of {runs}")
        print(f"features.extract (whole command)   : {pipe_cps:7.2f} clips/s")
        print(f"panns_inference Cnn14 forward loop : {bare_cps:7.2f} clips/s")
        print(f"ratio (goal >= 0.9)                : {ratio:7.3f}")
        return ratio
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main, serialize=lambda _: None)
