"""Collect a recipe's scores into one table: retrieval metrics per model and ensemble, caption metrics per system.

    python recipes/local/results.py --exp exp/synth [--out exp/synth/results.md]

Reads ``<exp>/retrieval_eval.json`` (from ``retrieval.evaluate``: each model, and their ensemble when there are
several; a model is named by its folder) and ``<exp>/decode/*/scores.json``; writes a
Markdown table (printed too) and ``results.png``, a bar chart of CIDEr-D per captioning system. Under the table,
each SCST system is compared with the cross-entropy model it started from (``<name>_scst`` against ``<name>_xe``),
and the SCST ensemble with its best member: CIDEr-D difference with a 95% paired-bootstrap interval over the clips.
With the prefix-LM captioners (``run.sh`` stages 10-13): the LoRA captioner and the merged one against the best SCST
model (chosen on the validation split), the frozen-LM (Pengi) against the LoRA one, the merged LoRA against its best
member; a table of question-answering accuracy by type (``<exp>/qa/*/scores.json``: closed-set answers, and
``*_open`` for answers the LM writes) beside the majority-answer baseline, each system's difference from
that baseline with its interval (paired by question); and a table of classification accuracy
(``<exp>/classify/*/scores.json``): classification by prompt against zero-shot retrieval, paired by clip; and CLAP's
keyword-to-caption comparison (``<exp>/keywords/*``, stages 14-16); and long audio (``<exp>/long_audio/*.json``,
stages 17-19): feature fusion against random-crop training seen as a central crop, as window averages or whole.
"""
from __future__ import annotations

import json
from pathlib import Path

import fire

from common.io import atomic_write, write_text_atomic
from eval.compare import compare, paired_bootstrap

RETRIEVAL_KEYS = ("t2a_R1", "t2a_R5", "t2a_R10", "t2a_mAP10", "a2t_R1", "a2t_R5", "a2t_R10", "a2t_mAP10")
CAPTION_KEYS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d", "spice", "spider", "sbert_sim", "fense", "words",
                "length_norm", "rerank_weight")
# what captioning.decode --variants writes beside a system's predictions, from the same beams: name -> row label
VARIANTS = {"plain": "plain beam search", "no_rerank": "no re-ranking"}


def _table(title: str, rows: dict[str, dict[str, float]], keys: tuple[str, ...], notes: dict[str, str]) -> list[str]:
    lines = [f"## {title}", "", "| system | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, scores in rows.items():
        cells = [(f"{scores[k]:.1f}" if k == "words" else f"{scores[k]:.3f}") if k in scores else "n/a" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {metric}: {note}" for metric, note in notes.items()] + [""]
    return lines


def collect(exp: str | Path) -> tuple[dict, dict, dict]:
    """(retrieval rows, captioning rows, notes: metrics unavailable, and the models of model-based metrics) found
    under ``exp``."""
    exp = Path(exp)
    retrieval = {}
    if (exp / "retrieval_eval.json").is_file():
        result = json.loads((exp / "retrieval_eval.json").read_text())
        members = result.get("members") or {result["checkpoints"][0]: result["metrics"]}
        retrieval = {Path(ckpt).parent.name: metrics for ckpt, metrics in members.items()}
        if "members" in result:
            retrieval["retrieval_ensemble"] = result["metrics"]
    captioning, notes = {}, {}
    for path in sorted(exp.glob("decode/*/scores*.json")):
        variant = path.name.removeprefix("scores").removesuffix(".json").lstrip(".")
        if variant and variant not in VARIANTS:
            continue
        name = system_name(path.parent.name, variant)
        scores = json.loads(path.read_text())
        captioning[name] = dict(scores["corpus"])
        predictions = path.parent / f"predictions{'.' + variant if variant else ''}.json"
        if predictions.is_file():  # mean caption length, against the references' (see the notes)
            captions = [row["caption"] for row in json.loads(predictions.read_text(encoding="utf-8"))]
            captioning[name]["words"] = sum(len(c.split()) for c in captions) / max(len(captions), 1)
        record = path.parent / "predictions.decoding.json"
        if record.is_file():  # the length normalisation and re-ranking weight, chosen on the validation split
            record = json.loads(record.read_text())
            settings = record.get("variants", {}).get(variant, record) if variant else record
            captioning[name].update({k: settings[k] for k in ("length_norm", "rerank_weight") if k in settings})
        notes.update({m: f"computed with {model}" for m, model in scores.get("models", {}).items()})
        notes.update({m: f"not available: {reason}" for m, reason in scores.get("unavailable", {}).items()})
    return retrieval, captioning, notes


def precision_note(exp: Path) -> str:
    """Which arithmetic each training run of ``exp`` used (its history records it): bf16 and fp32 give different
    tables, so a table names it."""
    runs: dict[str, list[str]] = {}
    for history in sorted(exp.glob("*/history.jsonl")):
        first = history.read_text(encoding="utf-8").splitlines()[:1]
        precision = json.loads(first[0]).get("precision", "not recorded") if first else "not recorded"
        runs.setdefault(precision, []).append(history.parent.name)
    return "Training arithmetic: " + "; ".join(f"{p} ({len(names)} runs: {', '.join(names)})"
                                               for p, names in sorted(runs.items())) if runs else ""


def results(exp: str, out: str | None = None, references: str | None = None) -> str:
    """Write (and return) the Markdown results table of the recipe run in ``exp``; ``references`` (the evaluation
    split's folder) gives the references' mean length beside the captions'."""
    retrieval, captioning, notes = collect(exp)
    if references:
        from features.manifest import read_manifest
        refs = [c for caps in read_manifest(references).captions.values() for c in caps]
        notes["words"] = f"mean words per caption; the references: {sum(len(c.split()) for c in refs) / len(refs):.1f}"
    notes["length_norm"] = "alpha of score / length ** alpha among finished beams, chosen on the validation split"
    notes["rerank_weight"] = ("weight of the retrieval model's audio-text similarity added to that score (SLAM-AAC's "
                              "CLAP-Refine), chosen with alpha on the validation split")
    lines = [f"# Results: {exp}", "", precision_note(Path(exp)), ""]
    lines += _table("Retrieval (evaluation split)", retrieval, RETRIEVAL_KEYS, {})
    lines += _table("Captioning (evaluation split)", captioning, CAPTION_KEYS, notes)
    lines += _comparisons(Path(exp), captioning)
    lines += _qa_table(Path(exp))
    lines += _classification_table(Path(exp))
    lines += _keywords_table(Path(exp))
    lines += _long_audio_table(Path(exp))
    lines += ["Training curves: " + ", ".join(str(p.relative_to(exp)) for p in sorted(Path(exp).glob("*/curves.png"))),
              ""]
    text = "\n".join(lines)
    out_path = Path(out or Path(exp) / "results.md")
    write_text_atomic(out_path, text)
    if captioning:
        _plot(captioning, out_path.with_suffix(".png"))
    print(text)
    return text


def _comparisons(exp: Path, captioning: dict[str, dict[str, float]]) -> list[str]:
    """Lines comparing SCST with its XE start, the SCST ensemble with its best member (chosen on the validation
    split), and each decoding with its variants from the same beams (CIDEr-D and SBERT-sim, bootstrap)."""
    pairs = [(name.removesuffix("_scst") + "_xe", name) for name in captioning
             if name.endswith("_scst") and name.removesuffix("_scst") + "_xe" in captioning]
    best = lambda names: max(names, key=lambda n: validation_cider_d(exp, n))  # noqa: E731
    members = [s for _, s in pairs]
    if "ensemble_scst" in captioning and members:
        pairs.append((best(members), "ensemble_scst"))
    if members:  # the DCASE 2024 system's premise: the LLM captioner at least as good as the best seq2seq one
        pairs += [(best(members), system) for system in ("lm_lora", "lm_merged") if system in captioning]
    if "lm_lora" in captioning and "lm_pengi" in captioning:
        pairs.append(("lm_lora", "lm_pengi"))
    lora_members = [n for n in captioning if n == "lm_lora" or n.startswith("lm_member")]
    if "lm_merged" in captioning and lora_members:
        pairs.append((best(lora_members), "lm_merged"))
    pairs += [(system_name(name, variant), name) for name in captioning for variant in VARIANTS
              if system_name(name, variant) in captioning]
    lines = []
    for base, system in pairs:
        for metric, what in (("cider_d", "CIDEr-D"), ("sbert_sim", "SBERT-sim")):
            if captioning[base].get(metric) is None or captioning[system].get(metric) is None:
                continue
            scores = [score_file(exp, name) for name in (base, system)]
            lines.append(_difference(system, base, what, compare(*scores, metric)[metric]))
    return lines + [""] if lines else []


def system_name(folder: str, variant: str = "") -> str:
    """A decoding's row name: its folder under ``decode/``, with a variant's label."""
    return f"{folder} ({VARIANTS[variant]})" if variant else folder


def score_file(exp: Path, name: str) -> Path:
    """The score file of the row ``name`` (:func:`system_name`)."""
    for variant, label in VARIANTS.items():
        if name.endswith(f" ({label})"):
            return exp / "decode" / name.removesuffix(f" ({label})") / f"scores.{variant}.json"
    return exp / "decode" / name / "scores.json"


def validation_cider_d(exp: Path, name: str) -> float:
    """The validation CIDEr-D of a system's chosen decoding (``captioning.decode`` records it when it chooses on the
    validation split; otherwise the best validation CIDEr-D in its training history): how a best member is chosen
    without looking at the evaluation split."""
    record = exp / "decode" / name / "predictions.decoding.json"
    tried = json.loads(record.read_text()).get("validation_cider_d") if record.is_file() else None
    if tried:
        return max(row["cider_d"] for row in tried)
    history = exp / f"caption_{name}" / "history.jsonl"
    rows = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    return max((row["val_cider_d"] for row in rows if row.get("val_cider_d") is not None), default=float("-inf"))


def _difference(system: str, base: str, what: str, r: dict, unit: str = "clips") -> str:
    return (f"- {system} vs {base}: {what} {r['difference']:+.3f} (95% interval {r['low']:+.3f} to {r['high']:+.3f}, "
            f"paired bootstrap over {r['clips']} {unit})")


def _interval(base: dict, system: dict) -> str:
    """``system``'s accuracy minus ``base``'s with its 95% interval, from their per-question ``correct`` lists."""
    if "correct" not in system:
        return "n/a"
    r = paired_bootstrap(base["correct"], system["correct"])
    return f"{r['difference']:+.3f} ({r['low']:+.3f} to {r['high']:+.3f})"


def _qa_table(exp: Path) -> list[str]:
    """Question answering accuracy per system and type (``eval.qa`` score files), beside the majority baseline."""
    files = sorted(exp.glob("qa/*/scores.json"))
    if not files:
        return []
    scored = {path.parent.name: json.loads(path.read_text()) for path in files}
    baseline = next((s["baseline"] for s in scored.values() if s.get("baseline")), None)
    types = sorted({t for s in scored.values() for t in s["scores"]["by_type"]})
    rows = {name: s["scores"] for name, s in scored.items()}
    if baseline:
        rows["majority answer"] = baseline
    lines = ["## Audio question answering (evaluation split, accuracy)", "",
             "| system | all | " + " | ".join(types) + " |", "|---" * (len(types) + 2) + "|"]
    for name, scores in rows.items():
        cells = [f"{scores['by_type'][t]['accuracy']:.3f}" if t in scores["by_type"] else "n/a" for t in types]
        lines.append(f"| {name} | {scores['accuracy']:.3f} | " + " | ".join(cells) + " |")
    lines.append("")
    if baseline and "correct" in baseline:
        systems = [name for name in rows if name != "majority answer"]
        lines += [_difference(name, "majority answer", "accuracy", paired_bootstrap(baseline["correct"],
                                                                                    rows[name]["correct"]),
                              "questions") for name in systems]
        typed = [t for t in types if "correct" in baseline["by_type"].get(t, {})]
        if typed:  # the same by type: where a system beats ignoring the audio, and where not
            lines += ["", "Accuracy minus the majority answer's, by type (95% interval, paired bootstrap over the "
                      "type's questions):", "", "| system | " + " | ".join(typed) + " |",
                      "|---" * (len(typed) + 1) + "|"]
            lines += [f"| {name} | " + " | ".join(_interval(baseline["by_type"][t], rows[name]["by_type"].get(t, {}))
                                                  for t in typed) + " |" for name in systems]
    return lines + [""]


ZERO_SHOT = "zero_shot_retrieval"  # the recipe's zero-shot classification by the retrieval models


def _classification_table(exp: Path) -> list[str]:
    """Top-1/top-5 accuracy per classifier (``eval.classification`` score files); each against zero-shot retrieval."""
    files = {path.parent.name: path for path in sorted(exp.glob("classify/*/scores.json"))}
    if not files:
        return []
    rows = {name: json.loads(path.read_text())["corpus"] for name, path in files.items()}
    lines = ["## Classification (evaluation split; right when the top label is one of the clip's)", "",
             "| system | top-1 | top-5 | chance |", "|---|---|---|---|"]
    lines += [f"| {name} | {c['top1']:.3f} | {c.get('top5', float('nan')):.3f} | {c['chance']:.3f} |"
              for name, c in rows.items()]
    lines.append("")
    if ZERO_SHOT in files:
        lines += [_difference(name, ZERO_SHOT, "top-1", compare(files[ZERO_SHOT], path, "top1")["top1"])
                  for name, path in files.items() if name != ZERO_SHOT]
    return lines + [""]


KEYWORD_SYSTEMS = {"captions": "captions only", "template": "+ template captions", "lm": "+ generated captions"}


def _keywords_table(exp: Path) -> list[str]:
    """CLAP's keyword-to-caption (stages 14-16): zero-shot top-1 and caption-retrieval mAP@10 of the same retrieval
    model trained on captions only, + label-only clips with template captions, + with generated captions."""
    folder = exp / "keywords"
    names = [n for n in KEYWORD_SYSTEMS if (folder / n / "scores.json").is_file() and (folder / n / "retrieval.json")
             .is_file()]
    if not names:
        return []
    zero = {n: folder / n / "scores.json" for n in names}
    ret = {n: json.loads((folder / n / "retrieval.json").read_text()) for n in names}
    lines = ["## Keyword-to-caption (evaluation split): zero-shot classification and text-to-audio retrieval", "",
             "| training data | zero-shot top-1 | t2a mAP@10 | t2a R@1 |", "|---|---|---|---|"]
    for n in names:
        top1 = json.loads(zero[n].read_text())["corpus"]["top1"]
        lines.append(f"| {KEYWORD_SYSTEMS[n]} | {top1:.3f} | {ret[n]['metrics']['t2a_mAP10']:.3f} | "
                     f"{ret[n]['metrics']['t2a_R1']:.3f} |")
    lines.append("")
    for base, system in (("captions", "template"), ("captions", "lm"), ("template", "lm")):
        if base in zero and system in zero:
            a, b = KEYWORD_SYSTEMS[base], KEYWORD_SYSTEMS[system]
            lines.append(_difference(b, a, "zero-shot top-1", compare(zero[base], zero[system], "top1")["top1"]))
            r = paired_bootstrap(ret[base]["per_query"]["t2a_mAP10"], ret[system]["per_query"]["t2a_mAP10"])
            lines.append(_difference(b, a, "t2a mAP@10", r, "captions"))
    return lines + [""]


LONG_AUDIO_SYSTEMS = {  # <exp>/long_audio/<name>.json: how the model was trained -> how a long clip was seen
    "crop": ("random 10-s crops", "central 10-s crop"),
    "windows": ("random 10-s crops", "mean of 10-s window embeddings"),
    "whole": ("random 10-s crops", "whole clip, frames pooled"),
    "fusion": ("feature fusion (aff_2d)", "global + 3 local views, fused"),
}


def _long_audio_table(exp: Path) -> list[str]:
    """Long audio (stages 17-19): retrieval on 30-90-s clips by the same CNN trained on random crops (seen three
    ways) and trained with CLAP's feature fusion; fusion against each, paired by query."""
    results = {n: json.loads((exp / "long_audio" / f"{n}.json").read_text()) for n in LONG_AUDIO_SYSTEMS
               if (exp / "long_audio" / f"{n}.json").is_file()}
    if not results:
        return []
    lines = ["## Long audio (30-90-s clips, evaluation split): text-to-audio and audio-to-text retrieval", "",
             "| trained on | a long clip seen as | t2a R@1 | t2a mAP@10 | a2t mAP@10 |", "|---|---|---|---|---|"]
    for n, r in results.items():
        m = r["metrics"]
        lines.append(f"| {' | '.join(LONG_AUDIO_SYSTEMS[n])} | {m['t2a_R1']:.3f} | {m['t2a_mAP10']:.3f} | "
                     f"{m['a2t_mAP10']:.3f} |")
    lines.append("")
    for base in ("crop", "windows", "whole"):
        if base in results and "fusion" in results:
            a, b = results[base]["per_query"], results["fusion"]["per_query"]
            for key, unit in (("t2a_mAP10", "captions"), ("a2t_mAP10", "clips")):
                r = paired_bootstrap(a[key], b[key])
                lines.append(_difference("fusion", f"{base} ({LONG_AUDIO_SYSTEMS[base][1]})",
                                         key.replace("_mAP10", " mAP@10"), r, unit))
    return lines + [""]


def _plot(captioning: dict[str, dict[str, float]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(captioning)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 3.2))
    ax.bar(names, [captioning[n].get("cider_d", 0.0) for n in names], color="tab:blue")
    ax.set_ylabel("CIDEr-D")
    ax.set_title("Captioning systems, evaluation split")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    fire.Fire(results, serialize=lambda _: None)  # the table is printed once, by results()
