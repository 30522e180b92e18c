"""Search latency of the audio index, exact against approximate, and the approximate search's recall@10.

    python benchmarks/bench_index.py [--sizes 10000,100000,1000000] [--models 2] [--queries 200]

Embeddings are synthetic but shaped like a library's: unit vectors of 256 dimensions per model, drawn around
``rows / 50`` centres (sounds come in kinds: many dogs, many engines), one centre per row shared by the models. Queries
are drawn around the same centres with more spread (a text query sits farther from the audio than clips of one kind
sit from each other). Exact search is ``retrieval.index.top_k`` (blocked matrix products); approximate search is
``retrieval.ann.IVF`` (faiss IVF-Flat) with ``nprobe`` lists. Recall@10 is the share of the exact ten found by
the approximate ten. Prints a markdown table; run it alone (both ways use both cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retrieval.ann import IVF, NPROBE, cluster, side_by_side  # noqa: E402
from retrieval.index import top_k  # noqa: E402

DIM = 256  # per model
ROW_SPREAD, QUERY_SPREAD = 1.5, 2.25  # noise around a centre, against the centre's unit length


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def library(rows: int, models: int, queries: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per model: rows [rows, DIM] and queries [queries, DIM], unit vectors around shared centres."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, max(1, rows // 50), rows)
    asked = kinds[rng.integers(0, rows, queries)]
    emb, qs = [], []
    for _ in range(models):
        centres = unit(rng.standard_normal((max(1, rows // 50), DIM), np.float32))
        emb.append(unit(centres[kinds] + ROW_SPREAD * unit(rng.standard_normal((rows, DIM), np.float32))))
        qs.append(unit(centres[asked] + QUERY_SPREAD * unit(rng.standard_normal((queries, DIM), np.float32))))
    return emb, qs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated numbers of indexed rows")
    parser.add_argument("--models", type=int, default=2, help="models in the index (their similarities averaged)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per size")
    parser.add_argument("--nprobe", default=f"{NPROBE // 2},{NPROBE},{NPROBE * 2}", help="lists scored, to compare")
    args = parser.parse_args()
    probes = [int(p) for p in args.nprobe.split(",")]
    print(f"{os.cpu_count()} CPUs; {args.models} model(s) x {DIM} dimensions; {args.queries} queries; top 10\n")
    print("| rows | exact ms/query | build s (cluster + file) | " + " | ".join(
        f"nprobe {p}: ms/query, recall@10, speed-up" for p in probes) + " |")
    print("| --- " * (3 + len(probes)) + "|")
    for rows in (int(s) for s in args.sizes.split(",")):
        emb, qs = library(rows, args.models, args.queries)
        index = {"paths": list(range(rows)), "embeddings": emb}
        start = time.perf_counter()
        exact = [[r for r, _ in top_k(index, [q[i] for q in qs], 10)] for i in range(args.queries)]
        exact_ms = 1e3 * (time.perf_counter() - start) / args.queries
        start = time.perf_counter()
        x = side_by_side(emb)
        ivf = IVF(x, *cluster(x))
        build = time.perf_counter() - start
        cells = []
        for p in probes:
            ivf.index.nprobe = p
            start = time.perf_counter()
            found = [ivf.search([q[i] for q in qs], 10)[0] for i in range(args.queries)]
            ms = 1e3 * (time.perf_counter() - start) / args.queries
            recall = np.mean([len(set(f.tolist()) & set(e)) / len(e) for f, e in zip(found, exact)])
            cells.append(f"{ms:.2f}, {recall:.3f}, {exact_ms / ms:.1f}x")
        print(f"| {rows:,} | {exact_ms:.2f} | {build:.1f} | " + " | ".join(cells) + " |", flush=True)
        del emb, qs, index, x, ivf


if __name__ == "__main__":
    main()
