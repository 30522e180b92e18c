"""Epoch time of cross-entropy training with scheduled sampling vs pure teacher forcing.

    python benchmarks/bench_scheduled_sampling.py [--batches 20] [--decoder transformer] [--threads 1]

One "epoch" is ``batches`` optimizer steps (forward, backward, clip, step) over the same in-memory batches of
random frames and captions, with a default-size captioner. For the Transformer, scheduled sampling is two parallel
passes (one without gradient); for the GRU decoder both ways are step-wise anyway.
"""
from __future__ import annotations

import sys
import time

import fire
import torch
import torch.nn.functional as F

from captioning.models import build_captioner


def epoch_seconds(model, batches, tf_prob: float) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for frames, lengths, tokens in batches:
        logits = model(frames, lengths, tokens[:, :-1], tf_prob)["logits"]  # (B, L-1, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=0,
                               label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()
    return time.perf_counter() - start


def bench(batches: int = 20, batch_size: int = 32, caption_len: int = 22, vocab_size: int = 4000,
          frame_dim: int = 2048, decoder: str = "transformer", tf_prob: float = 0.7, repeats: int = 2,
          threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Best of ``repeats`` epochs each way, alternating so both see the same machine load."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_captioner({"encoder": "bigru", "decoder": decoder, "frame_dim": frame_dim,
                             "vocab_size": vocab_size})
    data = []
    for _ in range(batches):
        lengths = torch.randint(20, 41, (batch_size,))
        tokens = torch.randint(4, vocab_size, (batch_size, caption_len))
        tokens[:, 0] = 1
        data.append((torch.randn(batch_size, int(lengths.max()), frame_dim), lengths, tokens))
    epoch_seconds(model, data[:2], tf_prob)  # warm-up
    forced, sampled = [], []
    for _ in range(repeats):
        forced.append(epoch_seconds(model, data, 1.0))
        sampled.append(epoch_seconds(model, data, tf_prob))
    result = {"teacher_forcing_s": min(forced), "scheduled_sampling_s": min(sampled),
              "ratio": min(sampled) / min(forced)}
    print(f"{decoder} decoder, {batches} batches of {batch_size}, captions of {caption_len} tokens, "
          f"{threads} thread(s)")
    print(f"  teacher forcing:                  {result['teacher_forcing_s']:7.2f} s/epoch")
    print(f"  scheduled sampling (p_tf={tf_prob}):  {result['scheduled_sampling_s']:7.2f} s/epoch")
    print(f"  ratio:                            {result['ratio']:7.2f}x")
    return result


def main(**kwargs) -> None:
    """Print the comparison (arguments as for ``bench``)."""
    bench(**kwargs)


if __name__ == "__main__":
    fire.Fire(bench if "--help" in sys.argv else main)
