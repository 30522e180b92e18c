"""Batched vs one-clip-at-a-time beam search: captions per second, same model, same clips, same run.

    python benchmarks/bench_beam.py [--clips 64] [--batch_size 32] [--beam_size 3] [--threads 1]

The model is a randomly initialised captioner of the default size (BiGRU 3x256 per direction, Transformer decoder
2 layers, d_model 256, 4 heads) with a Clotho-sized vocabulary; frames are random, 2048-d (CNN14-like), 20-40 per
clip. Random weights rarely write ``<eos>``, so nearly every caption runs to ``max_len``: a worst case for both.
"""
from __future__ import annotations

import sys
import time

import fire
import torch

from captioning.models import build_captioner
from captioning.search import beam_search


def bench(clips: int = 64, batch_size: int = 32, beam_size: int = 3, max_len: int = 20, vocab_size: int = 4000,
          frame_dim: int = 2048, decoder: str = "transformer", threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Time both ways of decoding ``clips`` clips; also checks that both return the same captions."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_captioner({"encoder": "bigru", "decoder": decoder, "frame_dim": frame_dim,
                             "vocab_size": vocab_size}).eval()
    lengths = torch.randint(20, 41, (clips,))
    frames = torch.randn(clips, int(lengths.max()), frame_dim)
    kw = {"bos": 1, "eos": 2, "beam_size": beam_size, "max_len": max_len}

    with torch.inference_mode():
        beam_search(model, frames[:2], lengths[:2], **kw)  # warm-up
        start = time.perf_counter()
        batched = []
        for i in range(0, clips, batch_size):
            batched += beam_search(model, frames[i:i + batch_size], lengths[i:i + batch_size], **kw)
        t_batched = time.perf_counter() - start
        start = time.perf_counter()
        single = [beam_search(model, frames[i:i + 1, : lengths[i]], lengths[i:i + 1], **kw)[0] for i in range(clips)]
        t_single = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single))
    result = {"batched_captions_per_s": clips / t_batched, "single_captions_per_s": clips / t_single,
              "speedup": t_single / t_batched, "identical": same / clips}
    print(f"{decoder} decoder, beam {beam_size}, batch {batch_size}, {clips} clips, max_len {max_len}, "
          f"{threads} thread(s)")
    print(f"  batched:        {result['batched_captions_per_s']:8.1f} captions/s")
    print(f"  one at a time:  {result['single_captions_per_s']:8.1f} captions/s")
    print(f"  speed-up:       {result['speedup']:8.1f}x   (identical captions: {same}/{clips})")
    return result


def main(**kwargs) -> None:
    """Print the comparison (arguments as for ``bench``)."""
    bench(**kwargs)


if __name__ == "__main__":
    fire.Fire(bench if "--help" in sys.argv else main)
