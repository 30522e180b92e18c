"""Approximate search for a large audio index: faiss's inverted-file index (IVF-Flat, inner product) over the models'
embeddings side by side. A query is side by side too, divided by the number of models, so that one inner product is
the mean cosine similarity that exact search computes; only the rows of the ``nprobe`` lists whose centroids are
nearest the query are scored.

The centroids and each row's list are computed when the index is written and stored with it, so opening an index
only files its rows into their lists. An update keeps the centroids while they still suit the index's size (at
least half the lists it would get afresh) and assigns the rows again.
"""
from __future__ import annotations

import math
from typing import Sequence

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

NPROBE = 32  # lists scored per query, at least; and at least 1/32 of them (benchmarks/bench_index.py measures)
TRAIN_PER_LIST = 64  # rows sampled per centroid for the clustering


def n_lists(n_rows: int) -> int:
    """Lists for ``n_rows`` rows: about 4 sqrt(n), as faiss's guidelines suggest, at least 1."""
    return max(1, min(n_rows, int(4 * math.sqrt(n_rows))))


def default_nprobe(lists: int) -> int:
    """Lists scored per query: ``NPROBE``, or 1/32 of them when that is more (a larger index spreads a query's
    neighbours over more lists)."""
    return max(NPROBE, lists // 32)


def side_by_side(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """One model's [N, E] or several models' rows concatenated: [N, sum E], float32, contiguous."""
    return np.ascontiguousarray(np.concatenate(list(embeddings), axis=1), dtype=np.float32)


def cluster(x: np.ndarray, centroids: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centroids [L, D] (the given ones if they still suit ``len(x)``, else k-means on a seeded sample) and each
    row's list [N] (int64)."""
    wanted = n_lists(len(x))
    if centroids is None or len(centroids) < wanted / 2 or centroids.shape[1] != x.shape[1]:
        sample = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:wanted * TRAIN_PER_LIST])]
        kmeans = faiss.Kmeans(x.shape[1], wanted, niter=20, seed=seed, spherical=True,
                              max_points_per_centroid=TRAIN_PER_LIST, min_points_per_centroid=1)
        kmeans.train(sample)
        centroids = kmeans.centroids
    quantizer = faiss.IndexFlatIP(x.shape[1])
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, lists = quantizer.search(x, 1)
    return np.asarray(centroids, np.float32), lists[:, 0].astype(np.int64)


class IVF:
    """Rows ``x`` filed into the lists of ``centroids`` as ``lists`` says; searched ``nprobe`` lists at a time
    (default: :func:`default_nprobe`)."""

    def __init__(self, x: np.ndarray, centroids: np.ndarray, lists: np.ndarray, nprobe: int | None = None):
        self.quantizer = faiss.IndexFlatIP(x.shape[1])  # kept: the IVF index refers to it
        self.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        self.index = faiss.IndexIVFFlat(self.quantizer, x.shape[1], len(centroids), faiss.METRIC_INNER_PRODUCT)
        add_preassigned(self.index, np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(lists, np.int64))
        self.index.nprobe = min(nprobe or default_nprobe(len(centroids)), len(centroids))

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and mean cosine similarities of the ``k`` best matches (fewer if fewer are in the lists scored) for
        one query given as each model's unit vector."""
        q = (side_by_side([np.asarray(v, np.float32)[None] for v in queries]) / len(queries))
        scores, rows = self.index.search(q, k)
        found = rows[0] >= 0
        return rows[0][found], scores[0][found]
