"""The SJTU DCASE 2022 report's four claims, tested on a run of the claims recipe (``run.sh --corpus synth_claims``).

    python recipes/local/claims.py --exp exp/synth_claims [--feature_model cnn10] [--out exp/synth_claims/claims.md]

Each claim is a difference between two systems on the same evaluation clips (or caption queries) with its 95%
paired-bootstrap interval (:func:`eval.compare.paired_bootstrap`), and a verdict: **supported** when the interval
lies above zero, **contradicted** when below, **not shown** when it holds zero (with its width: a narrow interval
around zero says the effect is small or absent at this scale, a wide one that the split cannot tell).

1. Retrieval pre-training makes better captioning features than an audio tagger trained on the same clips' labels
   with the same budget, and than an untrained encoder: CIDEr-D of the same Transformer captioner (cross-entropy)
   on each encoder's features (``decode/transformer_xe``, ``decode/transformer_xe_tagger``,
   ``decode/transformer_xe_untrained``).
2. SCST raises CIDEr-D over its cross-entropy start, for each decoder (``decode/<name>_scst`` vs ``<name>_xe``).
3. Ensembles: the captioning ensemble beats its best member (CIDEr-D); retrieval ensembles of different
   architectures beat ensembles of the same architecture from different seeds. Each side is a group of two-model
   ensembles (``retrieval_systems/same_*.json`` and ``mixed_*.json``) in which every model appears once, so neither
   side gets the luckier seeds; a caption's score is its mean AP over the group's ensembles (t2a mAP@10, paired by
   caption).
4. Retrieval pre-trained on a corpus of another character and fine-tuned on this one beats training on this one
   alone: against a model trained here for as many steps as pre-training and fine-tuning together
   (``claims/retrieval_target_long.json``, the control that rules out "it just trained longer"), and against the
   usual model (``claims/retrieval_target.json``); t2a mAP@10 by caption.

A claim whose files are missing is reported as not run.
"""
from __future__ import annotations

import json
from pathlib import Path

import fire
import numpy as np

from common.io import write_text_atomic
from eval.compare import compare, paired_bootstrap


def verdict(r: dict) -> str:
    """supported / contradicted / not shown, from the interval."""
    if r["low"] > 0:
        return "supported"
    if r["high"] < 0:
        return "contradicted"
    return f"not shown (the interval holds zero; half-width {(r['high'] - r['low']) / 2:.3f})"


def _row(what: str, base: str, a: float, system: str, b: float, r: dict, unit: str) -> str:
    return (f"| {what} | {system} {b:.3f} vs {base} {a:.3f} | {r['difference']:+.3f} | "
            f"{r['low']:+.3f} to {r['high']:+.3f} | {r['clips']} {unit} | {verdict(r)} |")


def _caption_row(exp: Path, what: str, base: str, system: str) -> str | None:
    files = [exp / "decode" / name / "scores.json" for name in (base, system)]
    if not all(f.is_file() for f in files):
        return None
    a, b = (json.loads(f.read_text())["corpus"]["cider_d"] for f in files)
    return _row(what, base, a, system, b, compare(*files, "cider_d")["cider_d"], "clips")


def _retrieval_row(what: str, base: list[Path], system: list[Path], key: str = "t2a_mAP10",
                   names: tuple[str, str] | None = None) -> str | None:
    """``system`` minus ``base``, each a group of evaluation files whose per-query scores are averaged."""
    if not base or not system or not all(f.is_file() for f in base + system):
        return None
    a, b = ([json.loads(f.read_text()) for f in group] for group in (base, system))
    per_query = [np.mean([r["per_query"][key] for r in group], axis=0) for group in (a, b)]
    r = paired_bootstrap(*per_query)
    unit = "captions" if key.startswith("t2a") else "clips"
    base_name, system_name = names or (base[0].stem, system[0].stem)
    return _row(f"{what}, {key.replace('_mAP10', ' mAP@10')}", base_name, float(per_query[0].mean()), system_name,
                float(per_query[1].mean()), r, unit)


def _best_member(exp: Path, members: list[str]) -> str | None:
    scores = {m: json.loads((exp / "decode" / m / "scores.json").read_text())["corpus"]["cider_d"]
              for m in members if (exp / "decode" / m / "scores.json").is_file()}
    return max(scores, key=scores.get) if scores else None


def claims(exp: str, feature_model: str = "cnn10", out: str | None = None) -> str:
    """Write (and return) ``claims.md`` for the claims recipe run in ``exp``."""
    exp_path = Path(exp)
    claimed = exp_path / "claims"
    same, mixed = (sorted((exp_path / "retrieval_systems").glob(f"{side}_*.json")) for side in ("same", "mixed"))
    caption_members = sorted(p.parent.name for p in exp_path.glob("decode/*_scst/scores.json")
                             if p.parent.name != "ensemble_scst")
    sections = {
        "1. Retrieval pre-training makes better captioning features (Transformer captioner, cross-entropy, CIDEr-D)": [
            _caption_row(exp_path, "retrieval encoder vs tagger (BCE on the labels, same clips and steps)",
                         "transformer_xe_tagger", "transformer_xe"),
            _caption_row(exp_path, "retrieval encoder vs untrained encoder", "transformer_xe_untrained",
                         "transformer_xe"),
            _caption_row(exp_path, "tagger vs untrained encoder", "transformer_xe_untrained",
                         "transformer_xe_tagger"),
        ],
        "2. SCST raises CIDEr-D over its cross-entropy start": [
            _caption_row(exp_path, f"{name.removesuffix('_scst')}: SCST vs XE", name.replace("_scst", "_xe"), name)
            for name in caption_members],
        "3. Ensembles beat single models; for retrieval, different architectures beat different seeds": [
            _caption_row(exp_path, "captioning ensemble vs its best member (CIDEr-D)",
                         _best_member(exp_path, caption_members) or "none", "ensemble_scst"),
            *(_retrieval_row(f"different architectures vs same architecture from two seeds ({len(same)} two-model "
                             "ensembles each, every model once per side)", same, mixed, key,
                             ("same architecture", "different architectures"))
              for key in ("t2a_mAP10", "a2t_mAP10")),
        ],
        "4. Pre-training on another corpus, then fine-tuning, beats training on the target alone": [
            *(_retrieval_row("fine-tuned vs target only for as many steps as pre-training and fine-tuning",
                             [claimed / "retrieval_target_long.json"], [claimed / "retrieval_finetuned.json"], key)
              for key in ("t2a_mAP10", "a2t_mAP10")),
            _retrieval_row("fine-tuned vs target only, the same epochs as fine-tuning",
                           [claimed / "retrieval_target.json"], [claimed / "retrieval_finetuned.json"]),
            _retrieval_row("source only (no fine-tuning) vs target only", [claimed / "retrieval_target.json"],
                           [claimed / "retrieval_source.json"]),
        ],
    }
    lines = [f"# The SJTU report's claims on the built-in corpus: {exp}", "",
             "Differences are system minus baseline, with 95% paired-bootstrap intervals (10,000 resamples of the "
             "evaluation clips or caption queries).", ""]
    for title, rows in sections.items():
        rows = [r for r in rows if r]
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["Not run (its outputs are missing).", ""]
            continue
        lines += ["| comparison | figures | difference | 95% interval | paired over | verdict |",
                  "|---|---|---|---|---|---|", *rows, ""]
    lines += _members(exp_path, feature_model)
    text = "\n".join(lines)
    write_text_atomic(out or exp_path / "claims.md", text)
    print(text)
    return text


def _members(exp: Path, feature_model: str) -> list[str]:
    """The retrieval models behind claims 3 and 4, each alone (t2a and a2t mAP@10)."""
    rows = []
    evaluated = exp / "retrieval_eval.json"
    if evaluated.is_file():
        result = json.loads(evaluated.read_text())
        for ckpt, m in (result.get("members") or {result["checkpoints"][0]: result["metrics"]}).items():
            rows.append(f"| {Path(ckpt).parent.name} | {m['t2a_mAP10']:.3f} | {m['a2t_mAP10']:.3f} |")
    for path in sorted((exp / "retrieval_systems").glob("*.json")):
        result = json.loads(path.read_text())
        members, m = [Path(c).parent.name.removeprefix("retrieval_") for c in result["checkpoints"]], result["metrics"]
        rows.append(f"| ensemble {path.stem}: {' + '.join(members)} | {m['t2a_mAP10']:.3f} | {m['a2t_mAP10']:.3f} |")
    for name in ("target_long", "source", "finetuned"):
        path = exp / "claims" / f"retrieval_{name}.json"
        if path.is_file():
            m = json.loads(path.read_text())["metrics"]
            rows.append(f"| retrieval_{name}_{feature_model} | {m['t2a_mAP10']:.3f} | {m['a2t_mAP10']:.3f} |")
    if not rows:
        return []
    return ["## Retrieval models (evaluation split)", "", "| model | t2a mAP@10 | a2t mAP@10 |", "|---|---|---|",
            *rows, ""]


if __name__ == "__main__":
    fire.Fire(claims, serialize=lambda _: None)
