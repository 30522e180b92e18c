"""Captions shared by the eval tests: real Clotho captions where present, else generated ones."""
import csv
import random
from pathlib import Path

import numpy as np
import pytest

from corpus.synth import caption_scene, sample_scene


def read_clotho(path: Path, limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    """File names and their 5 captions from a Clotho captions CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    return [r["file_name"] for r in rows], [[r[f"caption_{i}"] for i in range(1, 6)] for r in rows]


def make_candidates(mult_refs: list[list[str]], seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Candidates of several kinds, and the references left to score them against.

    Kinds cycle over: a held-out reference (4 references left), its words shuffled, a caption of another clip,
    and odd strings (empty, punctuation only, non-ASCII, one word)."""
    rng = random.Random(seed)
    odd = ["", "...", "!!! ??", "Café naïve – 日本の雨 über straße", "rain"]
    cands, refs = [], []
    for i, captions in enumerate(mult_refs):
        kind = i % 4
        if kind == 0:
            cands.append(captions[0])
            refs.append(captions[1:])
            continue
        if kind == 1:
            words = captions[0].split()
            rng.shuffle(words)
            cands.append(" ".join(words))
        elif kind == 2:
            cands.append(mult_refs[(i + 17) % len(mult_refs)][rng.randrange(5)])
        else:
            cands.append(odd[(i // 4) % len(odd)])
        refs.append(list(captions))
    return cands, refs


def generated_captions(n_clips: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """File names and 5 captions each for n_clips scenes of the synthetic corpus (about 1 s per 1,000 clips)."""
    names, mult_refs = [], []
    for index in range(n_clips):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        names.append(f"synth_{index:06d}.wav")
        mult_refs.append(caption_scene(sample_scene(rng), rng))
    return names, mult_refs


@pytest.fixture(scope="session")
def eval_captions(real_captions_if_any: Path | None) -> tuple[list[str], list[list[str]]]:
    """1,045 clips with 5 captions each: (file names, captions).

    All of Clotho v1 evaluation where the real tables are present (a realistic distribution of words), else as many
    clips of generated captions: the tests using them compare implementations and conventions, which any text does.
    """
    if real_captions_if_any is None:
        return generated_captions(1045)
    return read_clotho(real_captions_if_any / "clotho_v1_captions_evaluation.csv")


@pytest.fixture(scope="session")
def candidate_maker():
    """The :func:`make_candidates` helper, for tests that build their own sets."""
    return make_candidates


@pytest.fixture(scope="session")
def parity_set(eval_captions) -> tuple[list[str], list[str], list[list[str]]]:
    """200 clips: (ids, candidates of mixed kinds, references)."""
    ids, mult_refs = eval_captions
    cands, refs = make_candidates(mult_refs[:200])
    return ids[:200], cands, refs
