"""Serving a caption bundle: torch eager vs torch with dynamic int8 quantization vs ONNX Runtime.

    python benchmarks/bench_serving.py [--repeats 3] [--threads 1] [--models synth_cnn10_gru,...]

For each model size the recipes use (the synthetic corpus's CNN10 and CNN6 at width 0.25, 16 kHz, with its GRU and
Transformer captioners; and a full-width CNN14 at 32 kHz with a captioner of the SJTU report's size and a
Clotho-sized vocabulary), a bundle is built with random weights (no pretrained weights are available offline) and
exported to ONNX. Each way then runs in a child process of its own, so that peak memory is its own; the ways take
turns, round after round (``--repeats``), so drifting machine load hits all alike, and the table shows medians:

- load: seconds from the files to a ready pipeline in a fresh process, modules already imported (``load_bundle``,
  plus quantization, or the ONNX checks and sessions);
- 1 clip: seconds to caption one 10-s clip (audio in memory; encoder + beam search 3, up to 30 words);
- clips/s: captioning 8 clips of 10 s as one batch;
- peak RSS: the child's resident-set high-water mark (Python, torch and the libraries included), and how far
  above the resident set after the imports it went (the model and its work);
- same: captions identical to torch eager's, of the 8.

Random captioners rarely write ``<eos>``, so most captions run to 30 words: a worst case for decoding time. Int8
``quantize_dynamic`` covers Linear and GRU layers (the captioners and the encoder's fc1, not its convolutions).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's packages, whichever copy is installed

WAYS = ("torch", "int8", "onnx")
FIGURES = ("load", "one", "batch", "peak_mib", "model_mib")  # what a child reports, medians across rounds
CLIP_SECONDS, BATCH = 10.0, 8
# name -> (encoder spec, captioner encoder args, decoder, decoder args, vocabulary size)
SYNTH_ENC = {"hidden": 128, "n_layers": 2}
REPORT_ENC = {"hidden": 256, "n_layers": 3}
MODELS = {
    "synth_cnn10_gru": ({"name": "cnn10", "width": 0.25, "sample_rate": 16000}, SYNTH_ENC, "gru",
                        {"d_model": 128, "n_layers": 1, "embed_dim": 128, "attn_dim": 128}, 300),
    "synth_cnn10_transformer": ({"name": "cnn10", "width": 0.25, "sample_rate": 16000}, SYNTH_ENC, "transformer",
                                {"d_model": 128, "n_heads": 4, "n_layers": 2, "d_ff": 512}, 300),
    "synth_cnn6_gru": ({"name": "cnn6", "width": 0.25, "sample_rate": 16000}, SYNTH_ENC, "gru",
                       {"d_model": 128, "n_layers": 1, "embed_dim": 128, "attn_dim": 128}, 300),
    "synth_cnn6_transformer": ({"name": "cnn6", "width": 0.25, "sample_rate": 16000}, SYNTH_ENC, "transformer",
                               {"d_model": 128, "n_heads": 4, "n_layers": 2, "d_ff": 512}, 300),
    "report_cnn14_transformer": ({"name": "cnn14", "width": 1.0, "sample_rate": 32000}, REPORT_ENC, "transformer",
                                 {"d_model": 256, "n_heads": 4, "n_layers": 2, "d_ff": 1024}, 4000),
}


def build(name: str, folder: Path) -> Path:
    """A bundle of random weights for ``MODELS[name]``, exported to ONNX beside it; returns the bundle."""
    import torch

    from captioning.bundle import make_bundle
    from captioning.checkpoint import model_checkpoint
    from captioning.export import export_bundle
    from captioning.models import build_captioner
    from captioning.vocab import Vocabulary
    from common import save_checkpoint
    from features.encoders import build_audio_encoder
    from features.weights import checkpoint_sha256, save_audio_encoder

    spec, enc_args, decoder, dec_args, vocab_size = MODELS[name]
    torch.manual_seed(0)
    encoder = build_audio_encoder(**spec)
    save_audio_encoder(encoder, folder / "encoder.pt")
    vocab = Vocabulary.build([" ".join(f"w{i}" for i in range(vocab_size - 4))])  # + <pad> <bos> <eos> <unk>
    args = {"encoder": "bigru", "encoder_args": enc_args, "decoder": decoder, "decoder_args": dec_args,
            "frame_dim": encoder.frame_dim, "vocab_size": len(vocab)}
    model = build_captioner(args).eval()
    attrs = {"encoder": spec["name"], "checkpoint_sha256": checkpoint_sha256(folder / "encoder.pt"),
             "frame_dim": encoder.frame_dim}
    save_checkpoint(model_checkpoint(model, args, vocab, attrs), folder / "captioner.pt")
    bundle = make_bundle(str(folder / "encoder.pt"), str(folder / "captioner.pt"), str(folder / "bundle.pt"))
    export_bundle(bundle, folder / "onnx")
    return bundle


def clips(sample_rate: int, folder: Path) -> Path:
    """Eight 10-s clips of the synthetic corpus (repeated to 10 s where shorter), saved as one array."""
    from corpus.synth import make_corpus
    from features.audio import load_audio

    corpus = folder / f"synth_{sample_rate}"
    if not corpus.is_dir():
        make_corpus(corpus, BATCH, seed=0, workers=1, progress=False, shares=(0.0, 0.0, 1.0))
    n = int(CLIP_SECONDS * sample_rate)
    waves = [np.resize(load_audio(p, sample_rate), n) for p in sorted(corpus.glob("clotho_audio_*/*.wav"))]
    path = folder / f"clips_{sample_rate}.npy"
    np.save(path, np.stack(waves[:BATCH]).astype(np.float32))
    return path


def child(way: str, bundle: str, clips_path: str, threads: int) -> None:
    """One way, one round: print ``{"load", "one", "batch", "peak_mib", "captions"}`` as JSON."""
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(threads)
    from captioning.bundle import load_bundle
    from captioning.infer import caption_waveforms
    from captioning.onnx_runtime import load_onnx_pipeline  # every way imports the same: load times models only

    waves = list(np.load(clips_path))
    base = _status_mib("VmRSS")  # after the imports: what every way pays before any model
    start = time.perf_counter()
    if way == "onnx":
        pipeline = load_onnx_pipeline(bundle, Path(bundle).parent / "onnx", threads=threads)
    else:
        pipeline = load_bundle(bundle)
        if way == "int8":
            layers = {torch.nn.Linear, torch.nn.GRU}
            pipeline.encoder = torch.ao.quantization.quantize_dynamic(pipeline.encoder, layers, dtype=torch.qint8)
            pipeline.scorer.models = [torch.ao.quantization.quantize_dynamic(m, layers, dtype=torch.qint8)
                                      for m in pipeline.scorer.models]
    load = time.perf_counter() - start

    def caption(batch: list[np.ndarray]) -> list[str]:
        return [text for text, _ in caption_waveforms(pipeline, batch, **pipeline.decoding)]

    caption(waves[:1])  # warm-up (first-call allocations, ONNX Runtime's first run)
    one = statistics.median(_seconds(lambda: caption(waves[:1])) for _ in range(3))
    start = time.perf_counter()
    captions = caption(waves)
    batch = time.perf_counter() - start
    print(json.dumps({"load": load, "one": one, "batch": batch, "peak_mib": _status_mib("VmHWM"),
                      "model_mib": _status_mib("VmHWM") - base, "captions": captions}))


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory figure (VmRSS now, VmHWM the peak) in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(repeats: int = 3, threads: int = 1, models: str = ",".join(MODELS)) -> list[dict]:
    """Build, export and time every model in ``models`` (comma-separated names of ``MODELS``); print a table."""
    names = models.split(",") if isinstance(models, str) else list(models)
    unknown = set(names) - set(MODELS)
    if unknown:
        raise KeyError(f"unknown model(s) {sorted(unknown)} (valid: {', '.join(MODELS)})")
    rows = []
    print(f"Random weights (no pretrained weights offline); {threads} thread(s) per way; {repeats} round(s); "
          f"beam 3, max 30 words; batches of {BATCH} clips of {CLIP_SECONDS:g} s")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            folder = Path(tmp) / name
            folder.mkdir()
            start = time.perf_counter()
            bundle = build(name, folder)
            print(f"{name}: built and exported in {time.perf_counter() - start:.0f} s", flush=True)
            audio = clips(MODELS[name][0]["sample_rate"], Path(tmp))
            runs: dict[str, list[dict]] = {w: [] for w in WAYS}
            for _ in range(repeats):
                for way in WAYS:  # interleaved: each round runs every way once
                    done = subprocess.run([sys.executable, __file__, "child", way, str(bundle), str(audio),
                                           str(threads)], capture_output=True, text=True, cwd=REPO)
                    if done.returncode:
                        raise RuntimeError(f"{name} / {way} failed:\n{done.stderr[-2000:]}")
                    runs[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
            reference = runs["torch"][0]["captions"]
            for way in WAYS:
                med = {k: statistics.median(r[k] for r in runs[way]) for k in FIGURES}
                same = sum(a == b for a, b in zip(runs[way][0]["captions"], reference))
                rows.append({"model": name, "way": way, **med, "clips_per_s": BATCH / med["batch"], "same": same})
    print_table(rows)
    print("\nsame captions: of the 8, equal to torch eager's. Random weights give nearly flat word distributions, "
          "where a small change flips the beam's choice: int8's count says little about a trained model's.")
    return rows


def main(**kwargs) -> None:
    """Print the comparison (arguments as for ``bench``)."""
    bench(**kwargs)


def print_table(rows: list[dict]) -> None:
    print("\n| model | way | load s | 1 clip s | vs torch | clips/s (batch 8) | vs torch | peak RSS MiB | "
          "above imports MiB | same captions |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = {r["model"]: r for r in rows if r["way"] == "torch"}
    for r in rows:
        b = base[r["model"]]
        print(f"| {r['model']} | {r['way']} | {r['load']:.2f} | {r['one']:.3f} | {b['one'] / r['one']:.2f}x | "
              f"{r['clips_per_s']:.2f} | {r['clips_per_s'] / b['clips_per_s']:.2f}x | {r['peak_mib']:.0f} | "
              f"{r['model_mib']:.0f} | {r['same']}/{BATCH} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        import fire

        fire.Fire(bench if "--help" in sys.argv else main)
