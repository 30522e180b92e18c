"""CIDEr-D reward time for one SCST batch: FastCiderD vs pycocoevalcap's CiderD, on real Clotho captions.

A batch is 64 clips x 5 sampled candidates (captions of other clips and perturbed own captions), scored against
the clips' references. Both scorers get the same PTB-tokenized words. pycocoevalcap computes document frequencies
from the batch's references on every call; FastCiderD is built once on the development captions (the SCST set-up),
and a second FastCiderD built on the batch's own references checks the scores against pycocoevalcap's.

    python benchmarks/bench_cider.py [--repeats 7] [--data ../shared/data]
"""
import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
from pycocoevalcap.cider.cider import Cider

from eval.fast_cider import FastCiderD
from eval.tokenizer import ptb_tokenize_inputs


def read_clotho(path: Path) -> tuple[list[str], list[list[str]]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["file_name"] for r in rows], [[r[f"caption_{i}"] for i in range(1, 6)] for r in rows]


def make_batch(refs: list[list[str]], rng: random.Random, n_clips: int, n_samples: int) -> tuple[list[int], list[str]]:
    clips = rng.sample(range(len(refs)), n_clips)
    keys, cands = [], []
    for c in clips:
        for s in range(n_samples):
            if s % 2 == 0:  # a caption of another clip
                cand = rng.choice(refs[rng.randrange(len(refs))])
            else:  # an own caption with words dropped and swapped
                words = [w for w in rng.choice(refs[c]).split() if rng.random() > 0.2]
                if len(words) > 2:
                    i = rng.randrange(len(words) - 1)
                    words[i], words[i + 1] = words[i + 1], words[i]
                cand = " ".join(words)
            keys.append(c)
            cands.append(cand)
    return keys, cands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder with captions/clotho_v1_captions_development.csv")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()

    ids, raw_refs = read_clotho(Path(args.data) / "captions" / "clotho_v1_captions_development.csv")
    rng = random.Random(0)
    batches_raw = [make_batch(raw_refs, rng, args.clips, args.samples) for _ in range(args.repeats)]
    # One PTB pass over the references and all candidates (done offline in SCST: the vocabulary is tokenized).
    all_cands = [c for _, cands in batches_raw for c in cands]
    tok_cands, tok_refs = ptb_tokenize_inputs(all_cands, raw_refs)
    refs_words = [[r.split() for r in rs] for rs in tok_refs]
    batches, pos = [], 0
    for keys, cands in batches_raw:
        batches.append((keys, [c.split() for c in tok_cands[pos: pos + len(cands)]]))
        pos += len(cands)

    t0 = time.perf_counter()
    scorer = FastCiderD(refs_words)
    build = time.perf_counter() - t0

    fast_times, slow_times, max_diff = [], [], 0.0
    for keys, cands in batches:
        t0 = time.perf_counter()
        scorer.score(cands, keys)
        fast_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        gts = {i: [" ".join(r) for r in refs_words[k]] for i, k in enumerate(keys)}
        res = {i: [" ".join(c)] for i, c in enumerate(cands)}
        _, expected = Cider().compute_score(gts, res)
        slow_times.append(time.perf_counter() - t0)

        # Parity: same document frequencies as pycocoevalcap (the batch's own references, one set per sample).
        batch_scorer = FastCiderD([refs_words[k] for k in keys])
        got = batch_scorer.score(cands, range(len(keys)))
        max_diff = max(max_diff, float(np.abs(got - np.asarray(expected)).max()))

    fast, slow = statistics.median(fast_times), statistics.median(slow_times)
    print(f"batch: {args.clips} clips x {args.samples} candidates = {args.clips * args.samples} scores, "
          f"{len(ids)} Clotho development clips as reference corpus, {args.repeats} repeats (median)")
    print(f"FastCiderD build (once):      {build * 1e3:8.1f} ms")
    print(f"FastCiderD score:             {fast * 1e3:8.2f} ms / batch")
    print(f"pycocoevalcap CiderD:         {slow * 1e3:8.2f} ms / batch")
    print(f"speed-up:                     {slow / fast:8.1f} x")
    print(f"max |fast - pycocoevalcap|:   {max_diff:.2e}  (same document frequencies)")


if __name__ == "__main__":
    main()
