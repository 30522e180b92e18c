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

import importlib
import statistics
import sys
import types
import warnings

import fire
import torch
from timing import elapsed, interleaved_medians, mib, peak_mib, reference_folder

from features.encoders.beats import BEATS_FBANK, BEATS_PUBLISHED, BeatsEncoder
from features.kaldi import fbank


def load_reference() -> types.ModuleType:
    """Import the official ``BEATs.py`` (bare-name imports, torchaudio stubbed) with the project's fbank."""
    folder = reference_folder("beats")
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
        t_ours, t_ref = interleaved_medians([run_ours, run_ref], runs, warmup)
        mem_ours, mem_ref = peak_mib(run_ours), peak_mib(run_ref)
        t_fbank = statistics.median(elapsed(lambda: fbank(wave, None, BEATS_FBANK)) for _ in range(runs))
    ours_cps, ref_cps = batch / t_ours, batch / t_ref
    ratio = ours_cps / ref_cps
    print(f"input: {batch} x {seconds:g} s at 16 kHz, {torch.get_num_threads()} threads, median of {runs}; "
          f"max |frames - official| {float(diff):.1e}; fbank alone {batch / t_fbank:.0f} clips/s")
    print(f"project beats   : {ours_cps:7.2f} clips/s, peak {mib(mem_ours)} above the model")
    print(f"official BEATs  : {ref_cps:7.2f} clips/s, peak {mib(mem_ref)} above the model")
    print(f"ratio (goal >= 0.9): {ratio:7.3f}")
    return ratio


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
