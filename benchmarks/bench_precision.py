"""Training steps in float32 against bf16 autocast on this CPU (what ``train.precision: auto`` picks where the CPU has
AMX): seconds per step of each way, interleaved, and the ratio.

    python benchmarks/bench_precision.py [--runs 6] [--threads 2]

Steps (forward, backward, AdamW) of the main job's models at its sizes: ``retrieval``, the bi-encoder of
``recipes/synth/conf/retrieval_cnn10.yaml`` (CNN10 at width 0.25 on 5-s crops at 16 kHz, MiniLM with its top layer
trained) on 32 pairs; ``captioner``, the BiGRU + Transformer captioner on 32 clips of 48 frames and 24-token
captions with scheduled sampling.
"""
from __future__ import annotations

import contextlib
import os
import sys

import fire
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.timing import REPO, interleaved_medians  # noqa: E402


def _retrieval_step():
    from common.config import load_config
    from retrieval.loss import info_nce
    from retrieval.model import build_model
    from retrieval.train import DEFAULTS, _model_args

    cfg = load_config(DEFAULTS, str(REPO / "recipes/synth/conf/retrieval_cnn10.yaml"), {})
    model = build_model(_model_args(cfg["model"])).train()
    captions = [f"a dog barks {i} times while rain falls on a metal roof nearby" for i in range(32)]
    tokens = model.text_encoder.tokenize(captions)
    wave, lengths, ids = torch.randn(32, 80000) * 0.1, torch.full((32,), 80000), torch.arange(32)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)

    def loss():
        out = model(wave, lengths, tokens["input_ids"], tokens["attention_mask"])
        return info_nce(out["audio"].float(), out["text"].float(), ids, out["temperature"])
    return optimizer, loss


def _captioner_step():
    from captioning.models import build_captioner

    model = build_captioner({"encoder": "bigru", "encoder_args": {"hidden": 128, "n_layers": 2, "dropout": 0.2},
                             "decoder": "transformer", "decoder_args": {"d_model": 128, "n_heads": 4, "n_layers": 2,
                             "d_ff": 512, "dropout": 0.2}, "frame_dim": 128, "vocab_size": 350}).train()
    frames, frame_lengths = torch.randn(32, 48, 128), torch.randint(15, 49, (32,))
    tokens = torch.randint(3, 350, (32, 25))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def loss():
        logits = model(frames, frame_lengths, tokens[:, :-1], 0.8)["logits"]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    return optimizer, loss


def _timed_step(optimizer, loss, bf16: bool):
    def run():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            value = loss()
        value.backward()
        optimizer.step()
    return run


def bench(runs: int = 6, threads: int = 2) -> dict[str, dict[str, float]]:
    """Median seconds per training step in fp32 and bf16 for each model; prints a line per model."""
    torch.set_num_threads(threads)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    print(f"{threads} threads, CPU with AMX: {amx}")
    results = {}
    for name, make in (("retrieval", _retrieval_step), ("captioner", _captioner_step)):
        optimizer, loss = make()
        fp32, bf16 = interleaved_medians([_timed_step(optimizer, loss, False), _timed_step(optimizer, loss, True)],
                                         runs=runs, warmup=2)
        results[name] = {"fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16}
        print(f"{name}: fp32 {fp32:.3f} s/step, bf16 autocast {bf16:.3f} s/step: {fp32 / bf16:.2f}x")
    return results


if __name__ == "__main__":
    fire.Fire(bench, serialize=lambda _: None)
