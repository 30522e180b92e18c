"""Is system B really better than system A? A paired bootstrap over the clips of two score files (``eval.captions``
or ``eval.classification``).

    python -m eval.compare --baseline exp/decode/a/scores.json --system exp/decode/b/scores.json \
        [--metrics cider_d,rouge_l] [--samples 10000] [--out compare.json]

Evaluation splits of a few hundred clips give corpus scores whose differences are often within chance (on 90
clips, two captioners' CIDEr-D difference had a 95% interval about +-0.05 wide). This resamples the clips with
replacement, the same clips for both systems, and reports the difference B - A of the corpus scores with its 95%
percentile interval and the share of resamples in which B wins.

Only metrics whose corpus score is the mean of the per-clip scores can be resampled from the per-clip scores:
CIDEr-D, ROUGE-L, SPICE and SPIDEr, and the top-1 and top-5 accuracy of ``eval.classification`` score files.
BLEU and METEOR pool their statistics over the corpus and are refused.
"""
from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)
import json
import math
import os
from pathlib import Path

import numpy as np

from common.io import write_text_atomic

MEAN_METRICS = ("cider_d", "rouge_l", "spice", "spider", "sbert_sim", "fense", "spider_fl", "top1",
                "top5")  # top-k: eval.classification


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 10000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Difference of means ``b - a`` of paired per-clip scores, its ``level`` percentile interval and the share of
    resamples where ``b`` scores higher. Deterministic for a given ``seed``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"Invalid scores. (expected two equal-length non-empty 1-D arrays, found {a.shape} and {b.shape})")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = np.concatenate([diff[rng.integers(0, len(diff), (min(1000, samples - done), len(diff)))].mean(1)
                            for done in range(0, samples, 1000)])  # chunks keep memory at 1000 x clips
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high),
            "p_better": float((means > 0).mean()), "clips": len(diff), "samples": samples}


def _read_scores(path: str | os.PathLike) -> dict:
    """A score file of ``eval.captions`` (``corpus``, ``per_clip``, ``unavailable``)."""
    try:
        scores = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a score file of eval.captions ({type(err).__name__}: {err})") from err
    if not isinstance(scores, dict) or not {"corpus", "per_clip"} <= set(scores):
        raise ValueError(f"{path}: not a score file of eval.captions (no 'corpus' and 'per_clip')")
    return scores


def _per_clip(path: str | os.PathLike, scores: dict, metric: str) -> dict[str, float]:
    """Per-clip scores of ``metric`` from the score file ``path`` read as ``scores``, checked to average to its
    corpus score."""
    corpus, per_clip = scores["corpus"], scores["per_clip"]
    if metric not in MEAN_METRICS:
        raise ValueError(f"{metric}: its corpus score is not a mean over clips, so clips cannot be resampled "
                         f"(resamplable: {', '.join(MEAN_METRICS)})")
    if corpus.get(metric) is None:
        raise ValueError(f"{path}: no {metric} score (unavailable: {scores.get('unavailable', {}).get(metric, '?')})")
    values = {clip: s.get(metric) for clip, s in per_clip.items()}
    if not values or any(v is None for v in values.values()):
        raise ValueError(f"{path}: per-clip {metric} scores are missing")
    mean = sum(values.values()) / len(values)
    if not math.isclose(mean, corpus[metric], rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError(f"{path}: the per-clip {metric} scores average {mean:.6f}, not the corpus {corpus[metric]:.6f}")
    return values


def compare(baseline: str, system: str, metrics: str | tuple[str, ...] = "cider_d", samples: int = 10000,
            seed: int = 0, out: str | None = None) -> dict[str, dict[str, float]]:
    """Paired bootstrap of ``system`` against ``baseline`` (two ``eval.captions`` score files over the same clips).

    Args:
        baseline, system: score files (``--out`` of ``python -m eval.captions``).
        metrics: comma-separated, among cider_d, rouge_l, spice, spider, sbert_sim, fense, spider_fl.
        samples: bootstrap resamples. seed: their random seed.
        out: also write the result as JSON.
    Returns:
        ``{metric: {"difference", "low", "high", "p_better", "clips", "samples"}}`` (95% interval).
    """
    names = [m for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m]
    base_scores, system_scores = _read_scores(baseline), _read_scores(system)
    result = {}
    for metric in names:
        a, b = _per_clip(baseline, base_scores, metric), _per_clip(system, system_scores, metric)
        if set(a) != set(b):
            raise ValueError(f"{system} and {baseline} score different clips ({len(set(b) - set(a))} only in the "
                             f"first, {len(set(a) - set(b))} only in the second)")
        clips = sorted(a)
        result[metric] = paired_bootstrap(np.array([a[c] for c in clips]), np.array([b[c] for c in clips]),
                                          samples, seed)
    if out:
        write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    return result


def format_comparison(result: dict[str, dict[str, float]]) -> str:
    """One line per metric: difference, 95% interval, share of resamples won."""
    return "\n".join(f"{m}: {r['difference']:+.4f} (95% interval {r['low']:+.4f} to {r['high']:+.4f}; better in "
                     f"{100 * r['p_better']:.1f}% of {r['samples']} resamples of {r['clips']} clips)"
                     for m, r in result.items())


def main(baseline: str, system: str, metrics: str = "cider_d", samples: int = 10000, seed: int = 0,
         out: str | None = None) -> None:
    """Print ``system - baseline`` per metric with its 95% paired-bootstrap interval (see the module docstring)."""
    print(format_comparison(compare(baseline, system, metrics, samples, seed, out)))


if __name__ == "__main__":
    from common.cli import run

    run(main, "eval.compare")
