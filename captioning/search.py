"""Decoding: batched beam search (greedy is beam size 1) over one model or an ensemble of models.

Every decoder has the same step-wise contract (``prepare`` / ``init_state`` / ``step``), so an :class:`Ensemble`
can mix architectures: each member encodes the clips itself and keeps its own state, and at every step the members'
log-probabilities are averaged inside one beam.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from captioning.models import Captioner

Tree = Any  # a tensor, or a dict / list of trees


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], tree: Tree) -> Tree:
    """Apply ``fn`` to every tensor in nested dicts and lists, building new containers (inputs are not mutated)."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [tree_map(fn, v) for v in tree]
    raise TypeError(f"decoder state must hold tensors, dicts and lists, found {type(tree).__name__}")


class Ensemble:
    """Captioners sharing one vocabulary, decoded as one model (mean of log-probabilities at every step)."""

    def __init__(self, models: Sequence[Captioner]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)

    def start(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[list[Tree], list[Tree]]:
        """``frames`` [B, T, D] -> per-member clip context (fixed while decoding) and initial state."""
        ctx = [m.decoder.prepare(m.encode(frames, frame_lengths)) for m in self.models]
        return ctx, [m.decoder.init_state(c) for m, c in zip(self.models, ctx)]

    def step(self, ctx: list[Tree], state: list[Tree], tokens: torch.Tensor) -> tuple[torch.Tensor, list[Tree]]:
        """``tokens`` [N] -> mean log-probabilities [N, V] and every member's next state."""
        logps, states = [], []
        for model, c, s in zip(self.models, ctx, state):
            logits, s = model.decoder.step(c, s, tokens)
            logps.append(logits.float().log_softmax(-1))
            states.append(s)
        logp = logps[0] if len(logps) == 1 else torch.stack(logps).mean(0)
        return logp, states


@torch.no_grad()
def beam_search(model: Captioner | Ensemble, frames: torch.Tensor, frame_lengths: torch.Tensor, *, bos: int,
                eos: int, pad: int = 0, beam_size: int = 3, max_len: int = 30, min_len: int = 1,
                length_norm: float = 0.0) -> list[list[int]]:
    """Beam search over a batch of clips at once; returns each clip's best word ids (without ``<bos>``/``<eos>``).
    See :func:`beam_search_by_length_norm`, of which this is one ``length_norm``."""
    return beam_search_by_length_norm(model, frames, frame_lengths, bos=bos, eos=eos, pad=pad, beam_size=beam_size,
                                      max_len=max_len, min_len=min_len, length_norms=[length_norm])[0]


def beam_search_by_length_norm(model: Captioner | Ensemble, frames: torch.Tensor, frame_lengths: torch.Tensor, *,
                               bos: int, eos: int, pad: int = 0, beam_size: int = 3, max_len: int = 30,
                               min_len: int = 1, length_norms: Sequence[float] = (0.0,)) -> list[list[list[int]]]:
    """Beam search over a batch of clips at once; for each of ``length_norms``, each clip's best word ids.

    ``frames`` [B, T, D], ``frame_lengths`` [B]. The B*K hypotheses are decoded as one batch of rows
    ``b*K + k``. A hypothesis that wrote ``<eos>`` stays in its beam with a fixed score and competes with the
    live ones; search stops when every beam has finished or after ``max_len`` words (then ``<eos>`` is forced).
    ``<eos>`` is barred before ``min_len`` words. The best of the K final hypotheses is chosen by
    ``score / length ** length_norm`` (length counts ``<eos>``; 0 = plain sum of log-probabilities): the norm does
    not steer the search, so one search serves every ``length_norm`` of ``length_norms``.
    ``beam_size=1`` is greedy decoding. Each clip's result does not depend on the other clips of the batch.
    """
    scorer = model if isinstance(model, Ensemble) else Ensemble([model])
    B, K = frames.shape[0], beam_size
    N = B * K
    ctx, state = scorer.start(frames, frame_lengths)
    ctx = tree_map(lambda x: x.repeat_interleave(K, dim=0), ctx)  # (B*K, ...)
    state = tree_map(lambda x: x.repeat_interleave(K, dim=0), state)
    device = frames.device
    tokens = torch.full((N,), bos, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # at the start all K beams are the same: keep one
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    lengths = torch.zeros(N, device=device)
    history = torch.empty(N, 0, dtype=torch.long, device=device)
    for t in range(max_len + 1):
        logp, state = scorer.step(ctx, state, tokens)  # (N, V)
        V = logp.shape[1]
        logp[:, [bos, pad]] = float("-inf")  # never written inside a caption
        if t < min_len:
            logp[:, eos] = float("-inf")
        if t == max_len:  # out of room: only <eos> may follow
            logp = torch.full_like(logp, float("-inf")).index_fill_(1, torch.tensor([eos], device=device), 0.0)
        logp[finished] = float("-inf")
        logp[finished, pad] = 0.0  # a finished hypothesis continues (once) with free padding
        candidates = (scores.view(N, 1) + logp).view(B, K * V)
        scores, flat = candidates.topk(K, dim=1)  # (B, K)
        rows = (torch.arange(B, device=device)[:, None] * K + flat // V).view(N)
        tokens = (flat % V).view(N)
        state = tree_map(lambda x: x.index_select(0, rows), state)
        history = torch.cat([history.index_select(0, rows), tokens[:, None]], dim=1)
        lengths = lengths.index_select(0, rows) + (~finished.index_select(0, rows)).float()
        finished = finished.index_select(0, rows) | (tokens == eos)
        if bool(finished.all()):
            break
    picks = []
    for length_norm in length_norms:
        normalized = scores / lengths.view(B, K).pow(length_norm)
        best = (torch.arange(B, device=device) * K + normalized.argmax(dim=1)).tolist()
        rows = [history[row].tolist() for row in best]
        picks.append([words[: words.index(eos)] if eos in words else words for words in rows])
    return picks
