"""Decoding: batched beam search (greedy is beam size 1) over one model or an ensemble of models.

Every decoder has the same step-wise contract (``prepare`` / ``init_state`` / ``step``), so an :class:`Ensemble`
can mix architectures: each member encodes the clips itself and keeps its own state, and at every step the members'
log-probabilities are averaged inside one beam.
"""
from __future__ import annotations

from dataclasses import dataclass
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

    def start(self, frames: torch.Tensor, frame_lengths: torch.Tensor, prompts: Sequence[str] | None = None
              ) -> tuple[list[Tree], list[Tree]]:
        """``frames`` [B, T, D] -> per-member clip context (fixed while decoding) and initial state; ``prompts``,
        one per clip, are for prefix-LM members (e.g. questions; default: each member's own)."""
        given = {} if prompts is None else {"prompts": list(prompts)}
        ctx = [m.decoder.prepare(m.encode(frames, frame_lengths, **given)) for m in self.models]
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


@dataclass
class Hypotheses:
    """The K final hypotheses of a beam search over B clips: ``words[b][k]`` (word ids without ``<bos>``/``<eos>``),
    ``scores`` [B, K] (sums of log-probabilities) and ``lengths`` [B, K] (words, counting ``<eos>``)."""

    words: list[list[list[int]]]
    scores: torch.Tensor
    lengths: torch.Tensor

    @staticmethod
    def concat(parts: Sequence["Hypotheses"]) -> "Hypotheses":
        """The hypotheses of several batches as one, in order."""
        if not parts:
            return Hypotheses([], torch.zeros(0, 0), torch.zeros(0, 0))
        return Hypotheses([w for part in parts for w in part.words], torch.cat([p.scores for p in parts]),
                          torch.cat([p.lengths for p in parts]))

    def ranking(self, length_norm: float = 0.0, bonus: torch.Tensor | None = None) -> torch.Tensor:
        """Each hypothesis's rank score [B, K]: ``score / length ** length_norm``, plus ``bonus`` [B, K] if given (a
        re-ranker's weighted audio-text similarity)."""
        ranked = self.scores / self.lengths.pow(length_norm)
        return ranked if bonus is None else ranked + bonus.to(ranked)

    def best(self, length_norm: float = 0.0, bonus: torch.Tensor | None = None) -> list[list[int]]:
        """Each clip's hypothesis of highest :meth:`ranking`."""
        return [words for words, _ in self.chosen(length_norm, bonus)]

    def chosen(self, length_norm: float = 0.0, bonus: torch.Tensor | None = None) -> list[tuple[list[int], float]]:
        """Each clip's hypothesis of highest :meth:`ranking`, with its mean log-probability per word (``<eos>``
        counted): a confidence that does not fall with the caption's length."""
        if not self.words:
            return []
        per_word = (self.scores / self.lengths).tolist()
        return [(self.words[b][k], per_word[b][k])
                for b, k in enumerate(self.ranking(length_norm, bonus).argmax(dim=1).tolist())]


@torch.no_grad()
def beam_search(model: Captioner | Ensemble, frames: torch.Tensor, frame_lengths: torch.Tensor, *, bos: int,
                eos: int, pad: int = 0, beam_size: int = 3, max_len: int = 30, min_len: int = 1,
                length_norm: float = 0.0, prompts: Sequence[str] | None = None) -> list[list[int]]:
    """Beam search over a batch of clips at once; returns each clip's best word ids (without ``<bos>``/``<eos>``),
    chosen among the final hypotheses of :func:`beam_hypotheses` by ``score / length ** length_norm`` (length counts
    ``<eos>``; 0 = plain sum of log-probabilities). ``beam_size=1`` is greedy decoding."""
    return beam_hypotheses(model, frames, frame_lengths, bos=bos, eos=eos, pad=pad, beam_size=beam_size,
                           max_len=max_len, min_len=min_len, prompts=prompts).best(length_norm)


@torch.no_grad()
def beam_hypotheses(model: Captioner | Ensemble, frames: torch.Tensor, frame_lengths: torch.Tensor, *, bos: int,
                    eos: int, pad: int = 0, beam_size: int = 3, max_len: int = 30, min_len: int = 1,
                    prompts: Sequence[str] | None = None) -> Hypotheses:
    """Beam search over a batch of clips at once; returns every clip's ``beam_size`` final hypotheses.

    ``frames`` [B, T, D], ``frame_lengths`` [B]. The B*K hypotheses are decoded as one batch of rows
    ``b*K + k``. A hypothesis that wrote ``<eos>`` stays in its beam with a fixed score and competes with the
    live ones; search stops when every beam has finished or after ``max_len`` words (then ``<eos>`` is forced).
    ``<eos>`` is barred before ``min_len`` words. ``prompts`` (one per clip) go to prefix-LM captioners (questions
    answered by generation; :meth:`Ensemble.start`). How the best is chosen (length normalisation, re-ranking) does not
    steer the search, so one search serves every choice (:meth:`Hypotheses.best`). Each clip's result does not
    depend on the other clips of the batch.
    """
    scorer = model if isinstance(model, Ensemble) else Ensemble([model])
    B, K = frames.shape[0], beam_size
    N = B * K
    ctx, state = scorer.start(frames, frame_lengths, prompts)
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
        if t == max_len:  # out of room: only <eos> may follow, at its own log-probability (not free of cost)
            logp = torch.full_like(logp, float("-inf")).index_copy_(1, torch.tensor([eos], device=device),
                                                                     logp[:, [eos]])
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
    rows = [history[row].tolist() for row in range(N)]
    words = [words[: words.index(eos)] if eos in words else words for words in rows]
    return Hypotheses([words[b * K:(b + 1) * K] for b in range(B)], scores, lengths.view(B, K))
