"""Search with a trained bi-encoder (or an ensemble): text -> audio, audio -> captions (zero-shot classification:
:mod:`retrieval.zeroshot`).

    python -m retrieval.search text --checkpoints best.pt --audio DIR_OR_SPLIT --query "a dog barks" [--top 10]
    python -m retrieval.search audio --checkpoints best.pt --file clip.wav --captions SPLIT_OR_TXT [--top 10]
    python -m retrieval.search rank --checkpoints best.pt --audio DIR_OR_SPLIT --queries retrieval_captions.csv \
        --out submission.csv

``rank`` writes the DCASE language-based audio retrieval submission, ``caption,fname_1,...,fname_10``: a row per
distinct query (``--queries``: a CSV with a ``caption`` column, as DCASE's ``retrieval_captions.csv``; a text file of
one query per line; or a manifest split, its captions), its 10 best clips by audio id, best first.

``--audio`` is a folder of audio files (searched recursively) or a manifest split folder (with ``wav.csv``).
``--captions`` is a manifest split (its captions) or a text file with one caption per line. Files that cannot be read
(empty, no samples, not audio, non-finite samples) are skipped and listed under ``skipped``. With several
checkpoints, similarities are averaged. Clips are encoded whole as feature extraction encodes them: long audio in
windows of ``features.weights.CHUNK_SECONDS`` (frames concatenated, then pooled), never cropped; clips shorter than
``features.audio.MIN_SECONDS`` (0.1 s) zero-padded at their end to it. ``--device`` says where the models run: auto
(the default: this process's GPU where there is one, else the CPU), cpu, cuda or cuda:N.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import checkpoint_paths
from common.cli import run
from common.device import resolve_device
from common.io import read_csv, write_csv
from features.audio import AudioError, load_audio
from features.manifest import WAV_CSV, read_manifest
from features.weights import CHUNK_SECONDS
from retrieval.embed import audio_embeddings, similarity, text_embeddings
from retrieval.model import BiEncoder, load_model

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
DCASE_TOP = 10  # files per query in a DCASE retrieval submission


def audio_collection(source: str | Path) -> list[tuple[str, str]]:
    """(audio id, path) of every clip in a manifest split folder or, recursively, an audio folder."""
    source = Path(source)
    if (source / WAV_CSV).is_file():
        return [(e.audio_id, e.path) for e in read_manifest(source).audio]
    if not source.is_dir():
        raise ValueError(f"{source}: not a folder of audio files or a manifest split")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{source}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [(p.relative_to(source).as_posix(), str(p)) for p in files]


def _lines(value: str | Sequence[str], what: str) -> list[str]:
    """A list, a comma-separated string, or a text file of one item per line."""
    if not isinstance(value, str):
        items = [str(v) for v in value]
    elif Path(value).is_file():
        items = Path(value).read_text(encoding="utf-8").splitlines()
    else:
        items = value.split(",")
    items = [i.strip() for i in items if i.strip()]
    if not items:
        raise ValueError(f"Invalid {what}. (expected a non-empty list, comma-separated string or file)")
    return items


def _models(checkpoints: str | Sequence[str], device: str = "cpu") -> list[BiEncoder]:
    """Retrieval checkpoints -> bi-encoders in eval mode on ``device`` whose audio encoders window long audio as
    feature extraction does (memory stays bounded for any length)."""
    where = resolve_device(device)  # a bad device is refused before any checkpoint is read
    return [load_model(path, CHUNK_SECONDS, where) for path in checkpoint_paths(checkpoints)]


def _load_all(items: list[tuple[str, str]], sample_rate: int) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Decode clips (short ones zero-padded to ``MIN_SECONDS``), skipping unreadable ones: (ids, waveforms,
    ["path: reason", ...])."""
    ids, waves, skipped = [], [], []
    for audio_id, path in items:
        try:
            waves.append(load_audio(path, sample_rate))
            ids.append(audio_id)
        except AudioError as err:
            skipped.append(str(err))
    return ids, waves, skipped


def text_audio_scores(models: list[BiEncoder], texts: list[str], items: list[tuple[str, str]]
                      ) -> tuple[np.ndarray, list[str], list[str]]:
    """Mean similarity [n_texts, n_clips] over models, the ids of the clips kept, and the skipped files."""
    total, kept, skipped = None, None, []
    for model in models:
        ids, waves, skipped = _load_all(items, model.sample_rate)
        if not ids:
            raise ValueError(f"no readable audio among {len(items)} files: {skipped[:3]}")
        sim = similarity(text_embeddings(model, texts), audio_embeddings(model, waves))
        total, kept = (sim, ids) if total is None else (total + sim, kept)
    return total / len(models), kept, skipped


def _check_top(top: Any) -> int:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"Invalid top. (expected a positive integer, found {top!r})")
    return top


def _check_text(text: Any, what: str) -> str:
    """A query or prompt: non-empty text (a blank one would still get a confident-looking ranking)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"Invalid {what}. (expected non-empty text, found {text!r})")
    return text


def _check_labels(labels: Sequence[str]) -> list[str]:
    """Labels for zero-shot classification: a list of non-empty texts, at least one."""
    if isinstance(labels, str):
        raise ValueError("Invalid labels. (expected a list of labels, found one string)")
    labels = [_check_text(label, "label") for label in labels]
    if not labels:
        raise ValueError("Invalid labels. (expected at least one label)")
    return labels


def rank_clips(models: list[BiEncoder], query: str, audio: str | Path, top: int) -> tuple[list[tuple[str, float]],
                                                                                        list[str]]:
    """The ``top`` clips of ``audio`` (:func:`audio_collection`) for the checked text ``query``, best first, with
    their mean similarity; and the files that could not be read."""
    sim, ids, skipped = text_audio_scores(models, [query], audio_collection(audio))
    order = np.argsort(-sim[0], kind="stable")[:top]
    return [(ids[i], float(sim[0, i])) for i in order], skipped


def search_text(checkpoints: str | Sequence[str], audio: str, query: str, top: int = 10, device: str = "auto"
                ) -> dict[str, Any]:
    """Rank the clips of ``audio`` for the text ``query``; returns ``{"query", "results": [[id, score], ...]}``.
    ``device``: where the models run (auto: a GPU where there is one)."""
    query, top = _check_text(query, "query"), _check_top(top)
    results, skipped = rank_clips(_models(checkpoints, device), query, audio, top)
    return {"query": query, "results": [list(r) for r in results], "skipped": skipped}


def search_audio(checkpoints: str | Sequence[str], file: str, captions: str, top: int = 10, device: str = "auto"
                 ) -> dict[str, Any]:
    """Rank ``captions`` (a manifest split or a text file) for the audio ``file``; ``device`` as in
    :func:`search_text`."""
    top = _check_top(top)
    source = Path(captions)
    if (source / WAV_CSV).is_file():
        texts = sorted({c for caps in read_manifest(source).captions.values() for c in caps})
    else:
        texts = _lines(captions, "captions")
    sim, _, skipped = text_audio_scores(_models(checkpoints, device), texts, [(Path(file).name, file)])
    if skipped:
        raise ValueError(skipped[0])
    order = np.argsort(-sim[:, 0], kind="stable")[:top]
    return {"file": file, "results": [[texts[i], float(sim[i, 0])] for i in order]}


def read_queries(source: str | Path) -> list[str]:
    """The distinct queries, in file order, of a CSV with a ``caption`` column, a manifest split or a text file."""
    source = Path(source)
    if (source / WAV_CSV).is_file():
        texts = [c for caps in read_manifest(source).captions.values() for c in caps]
    elif source.suffix.lower() == ".csv":
        table = read_csv(source, ["caption"])
        for row, line in zip(table, table.lines):
            if not row["caption"].strip():
                raise ValueError(f"{source}, line {line}: an empty caption")
        texts = [row["caption"] for row in table]
    else:
        texts = _lines(str(source), "queries") if source.is_file() else []
    if not texts:
        raise ValueError(f"{source}: no queries (expected a CSV with a 'caption' column, a manifest split or a text "
                         "file of one query per line)")
    return list(dict.fromkeys(texts))


def write_ranking_csv(path: str | Path, queries: Sequence[str], sim: np.ndarray, ids: Sequence[str],
                      top: int = DCASE_TOP) -> None:
    """The DCASE retrieval submission ``caption,fname_1,...,fname_<top>`` from a similarity [n_queries, n_clips]:
    each query's ``top`` best clips (distinct ids), best first; a query repeated keeps its first row."""
    if len(ids) < top:
        raise ValueError(f"{path}: {len(ids)} clips to rank, a submission names {top} per query")
    rows, seen = [], set()
    for query, scores in zip(queries, sim):
        if query not in seen:
            seen.add(query)
            rows.append([query, *(ids[i] for i in np.argsort(-scores, kind="stable")[:top])])
    write_csv(path, ["caption", *(f"fname_{k}" for k in range(1, top + 1))], rows)


def rank(checkpoints: str | Sequence[str], audio: str, queries: str, out: str, device: str = "auto"
         ) -> dict[str, Any]:
    """Rank the clips of ``audio`` for every query of ``queries`` and write the DCASE retrieval CSV ``out``.

    Args:
        checkpoints: retrieval checkpoints, comma-separated (more than one: their similarities averaged).
        audio: a folder of audio files (searched recursively; ids are paths relative to it) or a manifest split.
        queries: a CSV with a ``caption`` column (DCASE's retrieval_captions.csv), a manifest split, or a text file
            of one query per line; repeated queries are ranked once.
        out: the submission CSV, ``caption,fname_1,...,fname_10``.
        device: where the models run: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N.
    """
    resolve_device(device)  # a bad device is refused before any work
    texts = read_queries(queries)
    sim, ids, skipped = text_audio_scores(_models(checkpoints, device), texts, audio_collection(audio))
    write_ranking_csv(out, texts, sim, ids)
    return {"out": out, "queries": len(texts), "clips": len(ids), "skipped": skipped}


if __name__ == "__main__":
    run({"text": search_text, "audio": search_audio, "rank": rank}, "retrieval.search",
        text_args=("query", "captions", "queries"))
