"""One SCST step's sampling and gradient: the sampling loop kept under autograd (the usual way) against sampling
without gradient and one teacher-forced pass for the log-probabilities (``captioning.scst``). Same log-probabilities
(tests/captioning/test_scst.py); seconds per step of each way, interleaved, and the ratio. SCST takes the one-pass
way where the decoder computes every position at once (the Transformer); a recurrent decoder would run its loop twice.

    python benchmarks/bench_scst.py [--runs 5] [--threads 1]

The main job's captioners and SCST setting: BiGRU 2 x 128 encoder, Transformer (2 x 128) or attention-GRU decoder,
32 clips of 48 frames, 5 samples each, at most 20 tokens; the CIDEr-D reward is left out (the same for both ways).
"""
from __future__ import annotations

import os
import sys

import fire
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.timing import interleaved_medians  # noqa: E402
from captioning.models import build_captioner  # noqa: E402
from captioning.scst import caption_log_probs, sample_captions  # noqa: E402
from captioning.vocab import SPECIALS, Vocabulary  # noqa: E402
from common.tensor import masked_mean  # noqa: E402

DECODER_ARGS = {"transformer": {"d_model": 128, "n_heads": 4, "n_layers": 2, "d_ff": 512, "dropout": 0.2},
                "gru": {"d_model": 128, "n_layers": 1, "embed_dim": 128, "attn_dim": 128, "dropout": 0.2}}


def bench(runs: int = 5, threads: int = 1, samples: int = 5, max_len: int = 20) -> dict[str, dict[str, float]]:
    """Median seconds of one SCST step (sampling, log-probabilities, backward) each way, per decoder."""
    torch.set_num_threads(threads)
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(346)])
    frames, lengths = torch.randn(32, 48, 128), torch.randint(15, 49, (32,))
    advantage = torch.randn(32 * samples, 1)
    results = {}
    for decoder, args in DECODER_ARGS.items():
        model = build_captioner({"encoder": "bigru", "encoder_args": {"hidden": 128, "n_layers": 2, "dropout": 0.2},
                                 "decoder": decoder, "decoder_args": args, "frame_dim": 128,
                                 "vocab_size": len(vocab)}).eval()

        def in_the_loop():
            model.zero_grad()
            _, log_probs, mask = sample_captions(model, frames, lengths, vocab, samples, max_len)
            (-masked_mean(advantage * log_probs, mask, dim=None)).backward()

        def one_pass():
            model.zero_grad()
            with torch.no_grad():
                tokens, _, mask = sample_captions(model, frames, lengths, vocab, samples, max_len)
            log_probs = caption_log_probs(model, frames, lengths, tokens, vocab, samples, max_len)
            (-masked_mean(advantage * log_probs, mask, dim=None)).backward()

        torch.manual_seed(0)
        loop, once = interleaved_medians([in_the_loop, one_pass], runs=runs, warmup=1)
        results[decoder] = {"loop_s": loop, "one_pass_s": once, "speedup": loop / once}
        print(f"{decoder}: gradient through the sampling loop {loop:.3f} s/step, sampling without gradient + one "
              f"teacher-forced pass {once:.3f} s/step: {loop / once:.2f}x ({threads} thread(s))")
    return results


if __name__ == "__main__":
    fire.Fire(bench, serialize=lambda _: None)
