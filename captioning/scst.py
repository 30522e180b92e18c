"""Self-critical sequence training: sampled captions rewarded by CIDEr-D, the greedy caption as baseline."""
from __future__ import annotations

from typing import Any

import torch

from captioning.models import Captioner
from captioning.search import beam_search, tree_map
from captioning.vocab import Vocabulary
from common.tensor import masked_mean
from eval.fast_cider import FastCiderD

SCST_BASELINES = ("greedy", "mean")


def _sampling_mask(logits: torch.Tensor, vocab: Vocabulary, last: bool) -> torch.Tensor:
    """Logits a sample is drawn from: never ``<bos>`` or ``<pad>``; at the last position, ``<eos>`` alone."""
    if last:
        return torch.full_like(logits, float("-inf")).index_fill(-1, torch.tensor([vocab.eos], device=logits.device),
                                                                 0.0)
    return logits.index_fill(-1, torch.tensor([vocab.bos, vocab.pad], device=logits.device), float("-inf"))


def sample_captions(model: Captioner, frames: torch.Tensor, frame_lengths: torch.Tensor, vocab: Vocabulary,
                    num_samples: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``num_samples`` captions per clip (rows ``b*num_samples + s``), step by step with cached states.

    Returns ``tokens`` [B*S, T] (``<eos>`` then ``<pad>``, T <= ``max_len``), ``log_probs`` [B*S, T] of the sampled
    tokens (with gradient where the caller has it on), and ``mask`` [B*S, T], True up to and including each
    caption's ``<eos>``.
    """
    ctx = model.decoder.prepare(model.encode(frames, frame_lengths))
    ctx = tree_map(lambda x: x.repeat_interleave(num_samples, dim=0), ctx)  # (B*S, ...)
    state = model.decoder.init_state(ctx)
    N = frames.shape[0] * num_samples
    device = frames.device
    inputs = torch.full((N,), vocab.bos, dtype=torch.long, device=device)
    alive = torch.ones(N, dtype=torch.bool, device=device)
    tokens, log_probs, masks = [], [], []
    for t in range(max_len):
        logits, state = model.decoder.step(ctx, state, inputs)  # (N, V)
        logp = _sampling_mask(logits, vocab, last=t == max_len - 1).log_softmax(-1)
        token = torch.multinomial(logp.detach().exp(), 1)[:, 0]
        masks.append(alive)
        tokens.append(torch.where(alive, token, torch.full_like(token, vocab.pad)))
        log_probs.append(logp.gather(1, token[:, None])[:, 0])
        alive = alive & (token != vocab.eos)
        inputs = token
        if not bool(alive.any()):
            break
    return torch.stack(tokens, 1), torch.stack(log_probs, 1), torch.stack(masks, 1)


def caption_log_probs(model: Captioner, frames: torch.Tensor, frame_lengths: torch.Tensor, tokens: torch.Tensor,
                      vocab: Vocabulary, num_samples: int, max_len: int) -> torch.Tensor:
    """Log-probabilities [B*S, T] of sampled ``tokens`` [B*S, T] (as :func:`sample_captions` returns them) under
    the distributions they were drawn from, in one teacher-forced pass: each clip encoded once, and for the
    Transformer every position at once. Same values as the sampling loop's, at a fraction of its backward cost."""
    enc = tree_map(lambda x: x.repeat_interleave(num_samples, dim=0), model.encode(frames, frame_lengths))
    inputs = torch.cat([torch.full_like(tokens[:, :1], vocab.bos), tokens[:, :-1]], 1)  # <bos> w1 .. w(T-1)
    logits = _sampling_mask(model.decoder(enc, inputs), vocab, last=False)  # (B*S, T, V)
    if tokens.shape[1] == max_len:  # the loop's final position allows <eos> alone
        logits[:, -1] = _sampling_mask(logits[:, -1], vocab, last=True)
    padding = tokens == vocab.pad  # after <eos>: never sampled (its log-probability is -inf), outside the mask
    log_probs = logits.log_softmax(-1).gather(2, tokens.masked_fill(padding, vocab.eos)[..., None])[..., 0]
    return log_probs.masked_fill(padding, 0.0)


def scst_loss(model: Captioner, batch: dict[str, Any], reward: FastCiderD, vocab: Vocabulary, num_samples: int,
              max_len: int, baseline: str = "greedy", dropout: bool = False) -> tuple[torch.Tensor, float]:
    """``-(CIDEr-D(sample) - b) * log p(sample)``, averaged over the sampled tokens up to ``<eos>``, and the mean
    CIDEr-D of the samples (the reward SCST raises, logged per epoch).

    ``baseline`` b: ``"greedy"``, the CIDEr-D of the greedy caption (what the model writes at test time), or
    ``"mean"``, the mean CIDEr-D of the clip's other samples (no extra decoding; needs ``num_samples`` >= 2).
    ``dropout``: sample with dropout active. Off by default, so the policy being improved is the network that
    decodes at test time; on a fresh 1000-clip synthetic set this gave both decoders a larger CIDEr-D gain.
    """
    if baseline not in SCST_BASELINES:
        raise ValueError(f"scst.baseline: unknown '{baseline}' (valid: {', '.join(SCST_BASELINES)})")
    if baseline == "mean" and num_samples < 2:
        raise ValueError(f"scst.baseline 'mean' needs num_samples >= 2, found {num_samples}")
    frames, lengths, ids = batch["frames"], batch["frame_lengths"], batch["audio_ids"]
    training = model.training
    model.eval()
    if baseline == "greedy":  # the baseline is what the model writes at test time
        greedy = beam_search(model, frames, lengths, bos=vocab.bos, eos=vocab.eos, pad=vocab.pad, beam_size=1,
                             max_len=max_len)
    model.train(training and dropout)
    # A decoder that computes every position at once (the Transformer) samples without gradient and scores its
    # samples in one teacher-forced pass: the same log-probabilities, 1.3x faster (benchmarks/bench_scst.py). A
    # recurrent one would run its loop twice (0.7x): its gradient stays in the sampling loop; so does any gradient
    # that must follow the dropout masks the samples were drawn under.
    if dropout or not getattr(model.decoder, "parallel_teacher_forcing", False):
        tokens, log_probs, mask = sample_captions(model, frames, lengths, vocab, num_samples, max_len)
    else:
        with torch.no_grad():
            tokens, _, mask = sample_captions(model, frames, lengths, vocab, num_samples, max_len)
        log_probs = caption_log_probs(model, frames, lengths, tokens, vocab, num_samples, max_len)
    model.train(training)
    sampled_ids = [i for i in ids for _ in range(num_samples)]
    sampled = reward.score([vocab.decode(row).split() for row in tokens.tolist()], sampled_ids)  # (B*S,)
    if baseline == "greedy":
        base = reward.score([vocab.decode(w).split() for w in greedy], ids).repeat(num_samples)
    else:
        per_clip = sampled.reshape(-1, num_samples)  # (B, S)
        base = ((per_clip.sum(1, keepdims=True) - per_clip) / (num_samples - 1)).reshape(-1)
    advantage = torch.as_tensor(sampled - base, dtype=log_probs.dtype, device=log_probs.device)[:, None]  # (B*S, 1)
    return -masked_mean(advantage * log_probs, mask, dim=None), float(sampled.mean())
