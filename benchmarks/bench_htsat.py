"""Forward throughput and peak memory of the project's HTS-AT against LAION-CLAP's, same weights, same input.

    python benchmarks/bench_htsat.py --batch 8 --seconds 10 --runs 3 [--fusion_type aff_2d]

CLAP's published shape (HTS-AT tiny, 28 M parameters) with random weights: LAION-CLAP's ``HTSAT_Swin_Transformer``
is built and the project's encoder loads its state dict strictly. Both get ``batch`` clips of ``seconds`` (at most
10 s: one pass each): the reference the waveforms repeat-padded to 10 s as CLAP's data code pads them (``mel_fusion``
views with ``--fusion_type``), the project's encoder the waveforms themselves, so its own padding (and fusion
log-mel) is inside its time. Eval mode, ``torch.inference_mode``, warm-up, median of ``runs``, interleaved. Peak
memory is the resident-set high-water mark above the resident set before one forward (Linux ``/proc``).
LAION-CLAP's code lives in ``shared/reference/laion_clap`` beside the checkout (``$AACTK_REFERENCE`` moves it).
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings

import fire
import torch
from timing import interleaved_medians, mib, peak_mib, reference_folder

from features.encoders.fusion import CLIP_SAMPLES, SAMPLE_RATE, FusionMel, repeat_pad
from features.encoders.htsat import HTSAT_SIZES
from features.weights import encoder_from_state


def load_reference() -> types.ModuleType:
    """LAION-CLAP's ``htsat`` module as package ``laion_clap`` (torchvision stubbed: imported only for a type)."""
    folder = reference_folder("laion_clap")
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = torch.nn.BatchNorm2d
    for name, module in (("torchvision", types.ModuleType("torchvision")),
                         ("torchvision.ops", types.ModuleType("torchvision.ops")), ("torchvision.ops.misc", misc)):
        sys.modules.setdefault(name, module)
    sys.path.insert(0, str(folder.parent))
    module = importlib.import_module("laion_clap.htsat")
    sys.path.remove(str(folder.parent))
    return module


def main(batch: int = 8, seconds: float = 10.0, runs: int = 3, warmup: int = 1, threads: int | None = None,
         fusion_type: str | None = None) -> float:
    """Print clips/s and peak memory of both models and return ours / LAION-CLAP's (clips/s)."""
    if threads:
        torch.set_num_threads(threads)
    if not 0 < seconds <= CLIP_SAMPLES / SAMPLE_RATE:
        raise SystemExit("--seconds: between 0 and 10 (one pass per clip in both models)")
    reference = load_reference()
    torch.manual_seed(0)
    cfg = types.SimpleNamespace(mel_bins=64, window_size=1024, hop_size=480, sample_rate=SAMPLE_RATE, fmin=50,
                                fmax=14000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its torch.meshgrid without indexing=
        ref = reference.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527, window_size=8, config=cfg,
            enable_fusion=fusion_type is not None, fusion_type=str(fusion_type), **HTSAT_SIZES["tiny"]).eval()
    ours = encoder_from_state({"name": "htsat", "size": "tiny", "fusion_type": fusion_type}, ref.state_dict(),
                              "LAION-CLAP HTS-AT")
    wave = torch.randn(batch, int(SAMPLE_RATE * seconds)) * 0.1
    padded = torch.stack([repeat_pad(w, CLIP_SAMPLES) for w in wave])
    if fusion_type:
        mel = FusionMel()
        inputs = {"mel_fusion": torch.stack([mel(w).expand(4, -1, -1) for w in padded]),
                  "longer": torch.zeros(batch, dtype=torch.bool)}
    else:
        inputs = {"waveform": padded}
    run_ours, run_ref = (lambda: ours(wave)), (lambda: ref(dict(inputs)))
    with torch.inference_mode():
        diff = (ours(wave)["clip"] - ref(dict(inputs))["embedding"]).abs().max()
        t_ours, t_ref = interleaved_medians([run_ours, run_ref], runs, warmup)
        mem_ours, mem_ref = peak_mib(run_ours), peak_mib(run_ref)
    ours_cps, ref_cps = batch / t_ours, batch / t_ref
    ratio = ours_cps / ref_cps
    print(f"input: {batch} x {seconds:g} s at 48 kHz, HTS-AT tiny, fusion {fusion_type}, "
          f"{torch.get_num_threads()} threads, median of {runs}; max |clip - LAION-CLAP| {float(diff):.1e}")
    print(f"project htsat     : {ours_cps:7.2f} clips/s, peak {mib(mem_ours)} above the model")
    print(f"LAION-CLAP HTS-AT : {ref_cps:7.2f} clips/s, peak {mib(mem_ref)} above the model")
    print(f"ratio (goal >= 1.0): {ratio:7.3f}")
    return ratio


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
