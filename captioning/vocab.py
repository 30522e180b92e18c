"""Vocabulary and tokenizer for captions.

Words are lower-cased with punctuation stripped, the same way :func:`eval.tokenizer.simple_tokenize` prepares
captions for the metrics, so what the model learns to write is what the metrics compare. A vocabulary is plain data
(its list of words) and travels inside every captioning checkpoint.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from eval.tokenizer import simple_tokenize

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


def tokenize(caption: str) -> list[str]:
    """Lower-case, drop punctuation, split on whitespace: ``"A dog's bark."`` -> ``["a", "dog", "s", "bark"]``."""
    return simple_tokenize(caption)


class Vocabulary:
    """Word <-> id mapping with ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3, then words."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {list(SPECIALS)}, found {words[:len(SPECIALS)]}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary must not repeat a word")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.pad, self.bos, self.eos, self.unk = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical), after the specials."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, found {min_count}")
        counts = Counter(w for caption in captions for w in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def encode(self, caption: str, max_len: int | None = None) -> list[int]:
        """``<bos> w1 .. wn <eos>`` as ids (unknown words -> ``<unk>``); at most ``max_len`` words are kept."""
        words = tokenize(caption)
        if max_len is not None:
            words = words[:max_len]
        return [self.bos] + [self.index.get(w, self.unk) for w in words] + [self.eos]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> caption text; stops at the first ``<eos>``, skips ``<bos>``/``<pad>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i in (self.bos, self.pad):
                continue
            out.append(self.words[i])
        return " ".join(out)
