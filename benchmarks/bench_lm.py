"""The prefix-LM captioner on this CPU: batched beam search against one clip at a time, and a training epoch.

    python benchmarks/bench_lm.py [--lm smollm2] [--clips 16] [--beam_size 3] [--max_len 20] [--train_clips 64]

SmolLM2-135M-Instruct with LoRA on q and k (r=16) and a 2-layer MLP mapping from 512-d frames (random frames, 10 s
of CNN frames each; random LoRA B so the adapter is not a no-op). Decoding: the same clips through
``captioning.search.beam_search`` as one batch and one by one, in the same run; the captions must agree (a clip's
result does not depend on its batch). Training: seconds per optimizer step and per epoch of ``--train_clips``
examples (batch 16, the recipe's), with the peak resident memory above the loaded model.
"""
from __future__ import annotations

import math
import time

import fire
import torch
from timing import mib, peak_mib

from captioning.models.prefix_lm import build_prefix_lm
from captioning.search import beam_search
from captioning.train_lm import answer_loss

FRAME_DIM, FRAMES = 512, 31


def main(lm: str = "smollm2", clips: int = 16, beam_size: int = 3, max_len: int = 20, train_clips: int = 64,
         batch_size: int = 16, threads: int | None = None) -> float:
    """Print captions/s batched and one at a time, and training seconds; return the batched speed-up."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, vocab = build_prefix_lm({"lm": lm, "frame_dim": FRAME_DIM, "lora": {"r": 16}})
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.01)
    frames, lengths = torch.randn(clips, FRAMES, FRAME_DIM), torch.full((clips,), FRAMES)
    search = dict(bos=vocab.bos, eos=vocab.eos, pad=vocab.pad, beam_size=beam_size, max_len=max_len)
    model.eval()
    with torch.inference_mode():
        beam_search(model, frames[:2], lengths[:2], **search)  # warm-up
        start = time.perf_counter()
        batched = beam_search(model, frames, lengths, **search)
        t_batched = time.perf_counter() - start
        start = time.perf_counter()
        single = [beam_search(model, frames[i:i + 1], lengths[i:i + 1], **search)[0] for i in range(clips)]
        t_single = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single))

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    answers = torch.randint(100, 5000, (batch_size, 14))
    answers[:, -1] = model.eos

    def one_step() -> None:
        logits = model(torch.randn(batch_size, FRAMES, FRAME_DIM), torch.full((batch_size,), FRAMES), answers)["logits"]
        loss = answer_loss(logits, answers, torch.full((batch_size,), answers.shape[1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    one_step()  # warm-up (optimizer state)
    steps = 3
    start = time.perf_counter()
    for _ in range(steps - 1):
        one_step()
    memory = peak_mib(one_step)
    t_step = (time.perf_counter() - start) / steps
    print(f"LM {lm}, {torch.get_num_threads()} threads; {clips} clips, beam {beam_size}, up to {max_len} tokens")
    print(f"batched beam search      : {clips / t_batched:6.2f} captions/s")
    print(f"one clip at a time       : {clips / t_single:6.2f} captions/s  ({same}/{clips} captions identical)")
    print(f"speed-up                 : {t_single / t_batched:6.2f}x")
    epoch = t_step * math.ceil(train_clips / batch_size)
    print(f"training, batch {batch_size}        : {t_step:6.2f} s/step, {epoch:.0f} s per epoch of {train_clips} "
          f"examples, peak {mib(memory)} above the model")
    return t_single / t_batched


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
