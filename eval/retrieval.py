"""Retrieval metrics: R@k and mAP@10, both directions, computed over chunks of queries.

Conventions
  * ``relevant[q]`` is the set of item indices relevant to query ``q`` (at least one per query).
  * R@k is the fraction of queries with at least one relevant item among the first k results (for audio-to-text
    with 5 captions per clip: any of the clip's captions).
  * AP@K = sum over relevant items ranked within the first K of (precision at that rank) / min(#relevant, K);
    mAP@K is its mean over queries (K = 10 by default, the DCASE Task 6b measure).
  * Ties are broken pessimistically and deterministically: among items with equal scores, irrelevant items rank
    before relevant ones (relevant ones among themselves by index). A constant similarity thus scores as badly as
    it can instead of rewarding low item indices.
  * Only one chunk of similarity rows ([chunk_size, n_items]) exists at a time; ranks are never materialized:
    for each query the K-th largest score is found by partial sort, and only relevant items scoring at least that
    high get an exact rank (by counting higher and equal scores in their row).

Similarity rows may be numpy arrays or torch tensors (moved to CPU numpy); NaN scores are an error.
"""
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

DEFAULT_KS = (1, 5, 10)
_PAIR_BLOCK = 1 << 24  # elements of row copies compared at once when counting ranks


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; eval does not import torch for this
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"Invalid {what}. (expected a numeric array or tensor, found dtype {x.dtype})")
    return x


def _pad_relevant(relevant: Sequence[Collection[int]]) -> np.ndarray:
    """``relevant`` as an int64 array [n_queries, max #relevant], padded with -1."""
    if isinstance(relevant, (str, bytes)) or not isinstance(relevant, Sequence):
        raise ValueError(f"Invalid relevant. (expected a list of sets of item indices, found {type(relevant).__name__})")
    sizes = [len(r) for r in relevant]
    empty = [q for q, s in enumerate(sizes) if s == 0]
    if empty:
        raise ValueError(f"Invalid relevant. (every query needs at least one relevant item; none for queries "
                         f"{empty[:10]}{' ...' if len(empty) > 10 else ''})")
    out = np.full((len(relevant), max(sizes, default=1)), -1, dtype=np.int64)
    for q, items in enumerate(relevant):
        idx = sorted({int(i) for i in items})
        out[q, : len(idx)] = idx
    return out


def _chunk_ranks(sim: np.ndarray, rel: np.ndarray, depth: int) -> np.ndarray:
    """Pessimistic 1-based ranks [q, m] of the relevant items ``rel`` (padded -1) in rows ``sim`` [q, N];
    ``inf`` for padding and for items ranked below ``depth``."""
    q, n_items = sim.shape
    valid = rel >= 0
    scores = np.take_along_axis(sim, np.where(valid, rel, 0), axis=1)  # (q, m)
    kk = min(depth, n_items)
    kth = np.partition(sim, n_items - kk, axis=1)[:, n_items - kk]  # (q,) the kk-th largest score
    # Items below the kk-th largest score have at least kk items strictly above them.
    cand_q, cand_j = np.nonzero(valid & (scores >= kth[:, None]))
    ranks = np.full(rel.shape, np.inf)
    if len(cand_q) == 0:
        return ranks
    s = scores[cand_q, cand_j]
    greater = np.empty(len(cand_q), dtype=np.int64)
    equal = np.empty(len(cand_q), dtype=np.int64)
    step = max(1, _PAIR_BLOCK // n_items)
    for a in range(0, len(cand_q), step):
        rows = sim[cand_q[a: a + step]]  # (p, N)
        v = s[a: a + step, None]
        greater[a: a + step] = (rows > v).sum(axis=1)
        equal[a: a + step] = (rows == v).sum(axis=1)
    # Relevant items tied with this one and of higher index rank after it (irrelevant ties before all of them).
    tied_after = ((scores[cand_q] == s[:, None]) & valid[cand_q]
                  & (np.arange(rel.shape[1])[None, :] > cand_j[:, None])).sum(axis=1)
    rank = greater + equal - tied_after
    ranks[cand_q, cand_j] = np.where(rank <= depth, rank, np.inf)
    return ranks


def _metrics_from_ranks(ranks: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int], map_at: int
                        ) -> dict[str, np.ndarray]:
    """Per-query hit indicators for R@k and AP@map_at from ranks [q, m]."""
    out = {f"R@{k}": (ranks <= k).any(axis=1).astype(np.float64) for k in ks}
    ranks = np.sort(ranks, axis=1)
    position = np.arange(1, ranks.shape[1] + 1)[None, :]  # relevant items at or above each one
    hit = ranks <= map_at
    precision = np.where(hit, position / np.where(hit, ranks, 1.0), 0.0)
    out[f"mAP@{map_at}"] = precision.sum(axis=1) / np.minimum(n_relevant, map_at)
    return out


def ranking_metrics_from_chunks(chunks: Iterable[Any], relevant: Sequence[Collection[int]], *,
                                ks: Sequence[int] = DEFAULT_KS, map_at: int = 10,
                                per_query: bool = False) -> dict[str, Any]:
    """R@k for ``ks`` and mAP@``map_at`` from consecutive blocks of similarity rows.

    ``chunks`` yields arrays [rows_i, n_items] whose rows, in order, are the queries of ``relevant``. With
    ``per_query`` each value is the array of every query's score (hit or AP), whose mean is the metric: two systems'
    arrays pair up query by query (:func:`eval.compare.paired_bootstrap`).
    """
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks) or not isinstance(map_at, int) or map_at < 1:
        raise ValueError(f"Invalid cut-offs. (expected positive ints, found ks={ks!r}, map_at={map_at!r})")
    rel = _pad_relevant(relevant)
    n_rel = (rel >= 0).sum(axis=1)
    depth = max(max(ks), map_at)
    parts: dict[str, list[np.ndarray]] = {**{f"R@{k}": [] for k in ks}, f"mAP@{map_at}": []}
    start, n_items = 0, None
    for chunk in chunks:
        sim = _to_numpy(chunk, "similarity")
        if sim.ndim != 2:
            raise ValueError(f"Invalid similarity. (expected rows [n_queries, n_items], found shape {sim.shape})")
        if n_items is None:
            n_items = sim.shape[1]
            if rel.max() >= n_items:
                bad = int(np.nonzero((rel >= n_items).any(axis=1))[0][0])
                raise ValueError(f"Invalid relevant. (query {bad} lists item {int(rel[bad].max())}, but there are "
                                 f"only {n_items} items)")
        elif sim.shape[1] != n_items:
            raise ValueError(f"Invalid similarity. (chunks disagree on n_items: {n_items} then {sim.shape[1]})")
        if np.isnan(sim).any():
            raise ValueError(f"Invalid similarity. (NaN scores in rows {start}..{start + len(sim) - 1})")
        end = start + len(sim)
        if end > len(rel):
            raise ValueError(f"Invalid similarity. (more rows than the {len(rel)} queries of relevant)")
        scores = _metrics_from_ranks(_chunk_ranks(sim, rel[start:end], depth), n_rel[start:end], ks, map_at)
        for name, values in scores.items():
            parts[name].append(values)
        start = end
    if start != len(rel):
        raise ValueError(f"Invalid similarity. (found {start} rows for {len(rel)} queries)")
    if per_query:
        return {name: np.concatenate(values) for name, values in parts.items()}
    return {name: float(sum(v.sum() for v in values)) / len(rel) for name, values in parts.items()}


def ranking_metrics(similarity: Any, relevant: Sequence[Collection[int]], *, ks: Sequence[int] = DEFAULT_KS,
                    map_at: int = 10, chunk_size: int = 1024) -> dict[str, float]:
    """R@k and mAP@``map_at`` for a similarity matrix [n_queries, n_items] (numpy or torch), one direction."""
    sim = _to_numpy(similarity, "similarity")
    if sim.ndim != 2:
        raise ValueError(f"Invalid similarity. (expected [n_queries, n_items], found shape {sim.shape})")
    return ranking_metrics_from_chunks(_row_chunks(sim, chunk_size), relevant, ks=ks, map_at=map_at)


def audio_to_text_relevance(text_to_audio: Sequence[int], n_audio: int) -> list[list[int]]:
    """Invert ``text_to_audio`` (audio index of each caption): the captions of each audio clip."""
    out: list[list[int]] = [[] for _ in range(n_audio)]
    for t, a in enumerate(text_to_audio):
        if not 0 <= int(a) < n_audio:
            raise ValueError(f"Invalid text_to_audio. (caption {t} points to audio {a}, outside 0..{n_audio - 1})")
        out[int(a)].append(t)
    return out


def clotho_text_to_audio(n_clips: int, captions_per_clip: int = 5) -> np.ndarray:
    """The Clotho layout: captions listed clip by clip, ``captions_per_clip`` each -> audio index per caption."""
    return np.repeat(np.arange(n_clips), captions_per_clip)


def retrieval_metrics(similarity: Any, text_to_audio: Sequence[int], *, ks: Sequence[int] = DEFAULT_KS,
                      map_at: int = 10, chunk_size: int = 1024, per_query: bool = False) -> dict[str, dict[str, Any]]:
    """Both directions from one text-by-audio similarity [n_text, n_audio].

    Text-to-audio: each caption's one relevant clip is ``text_to_audio[t]``. Audio-to-text: all captions of the
    clip are relevant. Returns ``{"text_to_audio": {...}, "audio_to_text": {...}}`` (with ``per_query``, arrays of
    every caption's, and every clip's, scores).
    """
    sim = _to_numpy(similarity, "similarity")
    if sim.ndim != 2 or sim.shape[0] != len(text_to_audio):
        raise ValueError(f"Invalid similarity. (expected [n_text={len(text_to_audio)}, n_audio], found {sim.shape})")
    a2t = audio_to_text_relevance(text_to_audio, sim.shape[1])
    t2a_rel = [[int(a)] for a in text_to_audio]
    return {
        "text_to_audio": ranking_metrics_from_chunks(_row_chunks(sim, chunk_size), t2a_rel, ks=ks, map_at=map_at,
                                                     per_query=per_query),
        "audio_to_text": ranking_metrics_from_chunks(_row_chunks(sim.T, chunk_size), a2t, ks=ks, map_at=map_at,
                                                     per_query=per_query),
    }


def retrieval_metrics_from_embeddings(text_emb: Any, audio_emb: Any, text_to_audio_ids: Sequence[int], *,
                                      ks: Sequence[int] = DEFAULT_KS, map_at: int = 10, chunk_size: int = 1024
                                      ) -> dict[str, dict[str, float]]:
    """Both directions from embeddings, text [n_text, D] and audio [n_audio, D], scored by dot product
    (L2-normalize them first for cosine). Similarities exist one chunk of ``chunk_size`` queries at a time."""
    text, audio = _to_numpy(text_emb, "text_emb"), _to_numpy(audio_emb, "audio_emb")
    if text.ndim != 2 or audio.ndim != 2 or text.shape[1] != audio.shape[1]:
        raise ValueError(f"Invalid embeddings. (expected [n_text, D] and [n_audio, D], found {text.shape} and "
                         f"{audio.shape})")
    if len(text_to_audio_ids) != len(text):
        raise ValueError(f"Invalid text_to_audio_ids. (expected {len(text)} ids, found {len(text_to_audio_ids)})")
    a2t = audio_to_text_relevance(text_to_audio_ids, len(audio))
    t2a_rel = [[int(a)] for a in text_to_audio_ids]
    return {
        "text_to_audio": ranking_metrics_from_chunks(_product_chunks(text, audio, chunk_size), t2a_rel,
                                                     ks=ks, map_at=map_at),
        "audio_to_text": ranking_metrics_from_chunks(_product_chunks(audio, text, chunk_size), a2t,
                                                     ks=ks, map_at=map_at),
    }


def _row_chunks(sim: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
    _check_chunk_size(chunk_size)
    for a in range(0, len(sim), chunk_size):
        yield np.ascontiguousarray(sim[a: a + chunk_size])


def _product_chunks(queries: np.ndarray, items: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
    _check_chunk_size(chunk_size)
    items_t = np.ascontiguousarray(items.T)
    for a in range(0, len(queries), chunk_size):
        yield queries[a: a + chunk_size] @ items_t  # (chunk, n_items)


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"Invalid chunk_size. (expected a positive int, found {chunk_size!r})")


