"""Dropout on a CPU: torch's ``F.dropout`` against ``common.dropout.dropout`` (byte masks), alone and inside the
main job's training steps, same inputs, same run.

    python benchmarks/bench_dropout.py [--repeats 20]

Alone: a (32, 15, 512) tensor at p = 0.2 (a Transformer decoder's feed-forward activations) and a (32, 32, 125, 32)
one at p = 0.2 (a CNN10 block's output at width 0.25). In steps: forward + backward of the main job's CNN10 (32 5-s
clips) and of its BiGRU + Transformer captioner (32 clips, scheduled sampling), each with torch's dropout swapped
back in, then with the project's; medians of ``repeats``, interleaved so drifting machine load hits both alike.
"""
from __future__ import annotations

import statistics
import time
from unittest import mock

import fire
import torch
import torch.nn.functional as F
from torch import nn

import common.dropout as fast


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _pair(name: str, torch_way, project_way, repeats: int) -> None:
    a, b = _median_ms(torch_way, repeats), _median_ms(project_way, repeats)
    print(f"{name}: torch {a:.2f} ms, project {b:.2f} ms: {a / b:.2f}x")


def bench(repeats: int = 20) -> None:
    torch.manual_seed(0)
    for shape in ((32, 15, 512), (32, 32, 125, 32)):
        x = torch.randn(shape)
        _pair(f"dropout {tuple(shape)}", lambda: F.dropout(x, 0.2, True), lambda: fast.dropout(x, 0.2), repeats)

    from captioning.models import build_captioner
    from features.encoders import build_audio_encoder

    encoder = build_audio_encoder("cnn10", width=0.25, sample_rate=16000, spec_augment=False, hop_size=320,
                                  dropout=0.1).train()
    wave, lengths = torch.randn(32, 80000) * 0.1, torch.full((32,), 80000)
    captioner = build_captioner({"encoder": "bigru", "encoder_args": {"hidden": 128, "n_layers": 2, "dropout": 0.2},
                                 "decoder": "transformer", "decoder_args": {"d_model": 128, "n_heads": 4,
                                 "n_layers": 2, "d_ff": 512, "dropout": 0.2}, "frame_dim": 128,
                                 "vocab_size": 400}).train()
    frames, frame_lengths = torch.randn(32, 25, 128), torch.randint(15, 26, (32,))
    tokens = torch.randint(3, 400, (32, 16))

    def audio_step():
        encoder(wave, lengths)["clip"].square().mean().backward()

    def caption_step():
        logits = captioner(frames, frame_lengths, tokens[:, :-1], 0.8)["logits"]
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()

    def with_torch_dropout(step):
        def run():
            with mock.patch.object(fast.Dropout, "forward", nn.Dropout.forward), \
                    mock.patch("features.encoders.panns.dropout", F.dropout):
                step()
        return run

    _pair("CNN10 training step", with_torch_dropout(audio_step), audio_step, max(3, repeats // 4))
    _pair("captioner training step", with_torch_dropout(caption_step), caption_step, repeats)


if __name__ == "__main__":
    fire.Fire(bench, serialize=lambda _: None)
