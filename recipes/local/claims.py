"""The SJTU DCASE 2022 report's four claims, tested on a run of the claims recipe (``run.sh --corpus synth_claims``).

    python recipes/local/claims.py --exp exp/synth_claims [--feature_model cnn10] [--out exp/synth_claims/claims.md]

Each claim is a difference between two systems on the same evaluation clips (or caption queries) with its 95%
paired-bootstrap interval (:func:`eval.compare.paired_bootstrap`), and a verdict: **supported** when the interval
lies above zero, **contradicted** when below, **not shown** when it holds zero (with its width: a narrow interval
around zero says the effect is small or absent at this scale, a wide one that the split cannot tell).

1. Retrieval training of a tagging-pretrained audio encoder makes better captioning features than the pretrained
   tagger alone (frozen), and than an untrained encoder: CIDEr-D of the same GRU captioner (cross-entropy, decoded
   without re-ranking) on each encoder's features. Every condition is two runs, each an encoder draw (the retrieval
   model and the untrained encoder from two seeds; the shipped tagger is one file) with a captioner seed
   (``decode/gru_xe_<encoder>_cap<seed>``); a condition's figure is its runs' mean with their spread, and a clip's
   score its mean over the runs, so the interval pools the seeds.
2. SCST raises CIDEr-D over its cross-entropy start, for each decoder (``decode/<name>_scst`` vs ``<name>_xe``).
3. Ensembles: the captioning ensemble beats its best member, chosen on the validation split (CIDEr-D); retrieval ensembles of different
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
from results import validation_cider_d  # recipes/local/results.py, beside this script


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
    """The member of highest validation CIDEr-D: choosing on the evaluation split would favour the member."""
    return max(members, key=lambda m: validation_cider_d(exp, m)) if members else None


CLAIM1 = {"pretrained tagger, frozen": ("pretrained_cap1", "pretrained_cap2"),
          "retrieval model fine-tuned from it": ("retrieval_seed0_cap1", "retrieval_seed1_cap2"),
          "untrained encoder": ("untrained_seed0_cap1", "untrained_seed1_cap2")}


def _group_row(exp: Path, what: str, base: str, system: str) -> str | None:
    """Claim 1: ``system`` minus ``base``, two conditions of :data:`CLAIM1`, each a group of runs whose per-clip
    CIDEr-D is averaged (the interval pools the seeds); the figures give each group's mean and its runs."""
    files = {name: [exp / "decode" / f"gru_xe_{run}" / "scores.json" for run in CLAIM1[name]] for name in (base, system)}
    if not all(f.is_file() for group in files.values() for f in group):
        return None
    runs = {name: [json.loads(f.read_text()) for f in group] for name, group in files.items()}
    clips = sorted(runs[base][0]["per_clip"])
    per_clip = [np.mean([[r["per_clip"][c]["cider_d"] for c in clips] for r in runs[name]], axis=0)
                for name in (base, system)]
    spread = {name: " / ".join(f"{r['corpus']['cider_d']:.3f}" for r in runs[name]) for name in runs}
    return _row(what, f"{base} ({spread[base]})", float(per_clip[0].mean()), f"{system} ({spread[system]})",
                float(per_clip[1].mean()), paired_bootstrap(*per_clip), "clips")


def claims(exp: str, feature_model: str = "cnn10", out: str | None = None) -> str:
    """Write (and return) ``claims.md`` for the claims recipe run in ``exp``."""
    exp_path = Path(exp)
    claimed = exp_path / "claims"
    same, mixed = (sorted((exp_path / "retrieval_systems").glob(f"{side}_*.json")) for side in ("same", "mixed"))
    caption_members = sorted(p.parent.name for p in exp_path.glob("decode/*_scst/scores.json")
                             if p.parent.name != "ensemble_scst")
    sections = {
        "1. Retrieval training of the pretrained encoder makes better captioning features (GRU captioner, "
        "cross-entropy, CIDEr-D; two runs each, their mean and each run)": [
            _group_row(exp_path, "retrieval-refined vs pretrained tagger (frozen)", "pretrained tagger, frozen",
                       "retrieval model fine-tuned from it"),
            _group_row(exp_path, "retrieval-refined vs untrained encoder", "untrained encoder",
                       "retrieval model fine-tuned from it"),
            _group_row(exp_path, "pretrained tagger (frozen) vs untrained encoder", "untrained encoder",
                       "pretrained tagger, frozen"),
        ],
        "2. SCST raises CIDEr-D over its cross-entropy start": [
            _caption_row(exp_path, f"{name.removesuffix('_scst')}: SCST vs XE", name.replace("_scst", "_xe"), name)
            for name in caption_members],
        "3. Ensembles beat single models; for retrieval, different architectures beat different seeds": [
            _caption_row(exp_path, "captioning ensemble vs its best member on validation (CIDEr-D)",
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
