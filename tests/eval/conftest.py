"""Real Clotho captions shared by the eval tests."""
import csv
import random
from pathlib import Path

import pytest


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


@pytest.fixture(scope="session")
def clotho_eval(shared_data: Path) -> tuple[list[str], list[list[str]]]:
    """All 1,045 clips of Clotho v1 evaluation: (file names, 5 captions each)."""
    return read_clotho(shared_data / "captions" / "clotho_v1_captions_evaluation.csv")


@pytest.fixture(scope="session")
def clotho_dev(shared_data: Path) -> tuple[list[str], list[list[str]]]:
    """All 2,893 clips of Clotho v1 development: (file names, 5 captions each)."""
    return read_clotho(shared_data / "captions" / "clotho_v1_captions_development.csv")


@pytest.fixture(scope="session")
def candidate_maker():
    """The :func:`make_candidates` helper, for tests that build their own sets."""
    return make_candidates


@pytest.fixture(scope="session")
def parity_set(clotho_eval) -> tuple[list[str], list[str], list[list[str]]]:
    """200 real clips: (ids, candidates of mixed kinds, references)."""
    ids, mult_refs = clotho_eval
    cands, refs = make_candidates(mult_refs[:200])
    return ids[:200], cands, refs
