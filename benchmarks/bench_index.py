"""Search latency of the audio index, exact against approximate, and the approximate search's recall@10.

    python benchmarks/bench_index.py [--sizes 10000,100000,1000000] [--models 2] [--queries 100] [--spread 1.0,1.5]
    python benchmarks/bench_index.py --index sounds.h5   # recall and latency on your own index

Embeddings are synthetic, shaped like a library's: unit vectors of 256 dimensions per model, drawn around
``rows / 50`` random centres (sounds come in kinds: many dogs, many engines), one kind per row shared by the models,
with noise of norm ``spread[0]`` against the centre's 1. Queries are drawn around the centres of random rows with
noise of norm ``spread[1]`` (a text query sits farther from the audio than clips of one kind sit from each other).
At the default spread a query's own kind scores above the best of the unrelated rows at every size, as in a working
retrieval model; at much more spread the exact top ten at 1M rows are unrelated rows that won over noise, and no
index finds those fast (recall@10 0.22 at 1.5,2.25). Exact search is ``retrieval.index.top_k`` (blocked matrix
products); approximate search is ``retrieval.ann.IVF`` (faiss IVF-Flat) at its default ``nprobe`` and at half and
twice it. Recall@10 is the share of the exact ten found by the approximate ten. Run it alone: both use both cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retrieval.ann import IVF, cluster, default_nprobe, side_by_side  # noqa: E402
from retrieval.index import read_index, top_k  # noqa: E402

DIM = 256  # per model
SPREAD = (1.0, 1.5)  # noise norms of rows and of queries around their centre (unit norm)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def library(rows: int, models: int, queries: int, spread: tuple[float, float] = SPREAD, seed: int = 0
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per model: rows [rows, DIM] and queries [queries, DIM], unit vectors around shared centres."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, max(1, rows // 50), rows)
    asked = kinds[rng.integers(0, rows, queries)]
    emb, qs = [], []
    for _ in range(models):
        centres = unit(rng.standard_normal((max(1, rows // 50), DIM), np.float32))
        emb.append(unit(centres[kinds] + spread[0] * unit(rng.standard_normal((rows, DIM), np.float32))))
        qs.append(unit(centres[asked] + spread[1] * unit(rng.standard_normal((queries, DIM), np.float32))))
    return emb, qs


def measure(emb: list[np.ndarray], qs: list[np.ndarray]) -> None:
    """Print the table's rows for one index: exact search, then the IVF at three ``nprobe``."""
    rows, n_queries = len(emb[0]), len(qs[0])
    queries = [[q[i] for q in qs] for i in range(n_queries)]
    index = {"paths": list(range(rows)), "embeddings": emb}
    start = time.perf_counter()
    exact = [{r for r, _ in top_k(index, q, 10)} for q in queries]
    exact_ms = 1e3 * (time.perf_counter() - start) / n_queries
    start = time.perf_counter()
    x = side_by_side(emb)
    ivf = IVF(x, *cluster(x))
    build = time.perf_counter() - start
    lists = ivf.index.nlist
    for nprobe in (default_nprobe(lists) // 2, default_nprobe(lists), default_nprobe(lists) * 2):
        ivf.index.nprobe = nprobe
        start = time.perf_counter()
        found = [set(ivf.search(q, 10)[0].tolist()) for q in queries]
        ms = 1e3 * (time.perf_counter() - start) / n_queries
        recall = np.mean([len(f & e) / len(e) for f, e in zip(found, exact)])
        print(f"| {rows:,} | {lists:,} | {exact_ms:.2f} | {build:.1f} | {nprobe} | {ms:.2f} | {exact_ms / ms:.0f}x "
              f"| {recall:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated numbers of indexed rows")
    parser.add_argument("--models", type=int, default=2, help="models in the index (their similarities averaged)")
    parser.add_argument("--queries", type=int, default=100, help="queries timed per size")
    parser.add_argument("--spread", default=",".join(map(str, SPREAD)), help="noise norms of rows and queries")
    parser.add_argument("--index", help="an index of your own (retrieval.index build) instead of synthetic rows: "
                                        "its rows, queried by a seeded sample of its own rows (clip to clips)")
    args = parser.parse_args()
    spread = tuple(float(v) for v in args.spread.split(","))
    if args.index:
        emb = read_index(args.index)["embeddings"]
        picked = np.random.default_rng(0).choice(len(emb[0]), min(args.queries, len(emb[0])), replace=False)
        print(f"{os.cpu_count()} CPUs; {args.index}: {len(emb)} model(s), {len(emb[0]):,} rows; "
              f"{len(picked)} of its rows as queries; top 10\n")
    else:
        print(f"{os.cpu_count()} CPUs; {args.models} model(s) x {DIM} dimensions; spread {spread}; "
              f"{args.queries} queries; top 10\n")
    print("| rows | lists | exact ms/query | IVF build s | nprobe | IVF ms/query | speed-up | recall@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    if args.index:
        measure(emb, [e[picked] for e in emb])
        return
    for rows in (int(s) for s in args.sizes.split(",")):
        measure(*library(rows, args.models, args.queries, spread))


if __name__ == "__main__":
    main()
