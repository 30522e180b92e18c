"""Two independent training jobs on a 2-core CPU: one after the other on 2 threads each (torch's default), or both at
once on 1 thread each (what ``recipes/run.sh`` does with ``parallel_jobs: 2``). Wall time of each way, same work.

    python benchmarks/bench_parallel_steps.py [--steps 10] [--job retrieval|captioner]

A job is ``steps`` training steps (forward, backward, AdamW) of the main job's models at its sizes: ``retrieval``, the
CNN10 (width 0.25, 16 kHz, hop 320) on a batch of 32 5-s crops; ``captioner``, the BiGRU + Transformer captioner on a
batch of 32 clips of 25 frames and 15-token captions with scheduled sampling. Each job is its own process (as the
recipe's steps are), started with ``OMP_NUM_THREADS``; process start-up is part of the time, as in the recipe.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import fire

WORKER = r"""
import sys, time, torch
import torch.nn.functional as F
job, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
if job == "retrieval":
    from features.encoders import build_audio_encoder
    model = build_audio_encoder("cnn10", width=0.25, sample_rate=16000, spec_augment=False, hop_size=320,
                                dropout=0.1).train()
    wave, lengths = torch.randn(32, 80000) * 0.1, torch.full((32,), 80000)
    loss_of = lambda: model(wave, lengths)["clip"].square().mean()
else:
    from captioning.models import build_captioner
    model = build_captioner({"encoder": "bigru", "encoder_args": {"hidden": 128, "n_layers": 2, "dropout": 0.2},
                             "decoder": "transformer", "decoder_args": {"d_model": 128, "n_heads": 4, "n_layers": 2,
                             "d_ff": 512, "dropout": 0.2}, "frame_dim": 128, "vocab_size": 400}).train()
    frames, frame_lengths = torch.randn(32, 25, 128), torch.randint(15, 26, (32,))
    tokens = torch.randint(3, 400, (32, 16))
    def loss_of():
        logits = model(frames, frame_lengths, tokens[:, :-1], 0.8)["logits"]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
for _ in range(steps):
    optimizer.zero_grad()
    loss_of().backward()
    optimizer.step()
"""


def _start(job: str, steps: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-c", WORKER, job, str(steps)], env=env)


def _wall(procs_in_turn: list[list[tuple[str, int, int]]]) -> float:
    """Seconds to run the groups one after the other, the processes of a group at once."""
    t0 = time.perf_counter()
    for group in procs_in_turn:
        procs = [_start(*args) for args in group]
        if any(p.wait() for p in procs):
            raise RuntimeError("a benchmark process failed")
    return time.perf_counter() - t0


def bench(steps: int = 10, job: str = "retrieval") -> dict[str, float]:
    """Time two ``job`` jobs both ways; prints and returns the seconds and the ratio."""
    sequential = _wall([[(job, steps, 2)], [(job, steps, 2)]])
    parallel = _wall([[(job, steps, 1), (job, steps, 1)]])
    print(f"{job}, 2 jobs x {steps} steps on {os.cpu_count()} CPUs: one after the other on 2 threads "
          f"{sequential:.1f} s, both at once on 1 thread {parallel:.1f} s: {sequential / parallel:.2f}x")
    return {"sequential_s": sequential, "parallel_s": parallel, "speedup": sequential / parallel}


if __name__ == "__main__":
    fire.Fire(bench, serialize=lambda _: None)
