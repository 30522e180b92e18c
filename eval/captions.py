"""All caption metrics on one tokenization, and the ``python -m eval.captions`` command.

Run ``python -m eval.captions --predictions FILE --references FILE [--out FILE]``; ``--help`` lists options.
"""
from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.checkpoint import checkpoint_paths
from common.io import read_csv, write_text_atomic

from ._checks import check_metric_inputs
from .bleu import bleu
from .cider_d import cider_d
from .meteor import meteor
from .rouge_l import rouge_l
from .semantic import (SBERT_DEFAULT, find_echecker, fluency_errors, fluency_penalised, sbert_model_name,
                       sbert_sim)
from .spice import MetricUnavailableError, spice, spice_unavailable_reason
from .spider import combine_spider
from .tokenizer import ptb_tokenize_inputs

ALL_METRICS = ("bleu", "meteor", "rouge_l", "cider_d", "spice", "spider", "sbert_sim", "fense", "spider_fl")


@dataclass
class CaptionReport:
    """Scores of a caption set. ``corpus``: metric key -> corpus score; ``sentence``: metric key -> one score per
    candidate; ``unavailable``: metric name -> why it could not be computed and what to do; ``models``: metric name
    -> the model a model-based metric used (SBERT-sim's numbers depend on it)."""
    corpus: dict[str, float] = field(default_factory=dict)
    sentence: dict[str, list[float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)


def caption_metrics(candidates: list[str], mult_references: list[list[str]], *,
                    metrics: tuple[str, ...] | list[str] = ALL_METRICS,
                    corenlp_dir: str | os.PathLike | None = None, sbert_model: str = SBERT_DEFAULT,
                    echecker: str | os.PathLike | None = None) -> CaptionReport:
    """Compute the requested caption metrics, PTB-tokenizing candidates and references once for all of them.

    ``metrics`` names from ``ALL_METRICS``: ``bleu`` gives ``bleu_1..bleu_4``, the others one key each. SPICE (and
    so SPIDEr) is reported in ``unavailable`` rather than as a number where it cannot run (see :mod:`eval.spice`);
    so are FENSE and SPIDEr-FL without FENSE's error checker ``echecker`` (see :mod:`eval.semantic`). SBERT-sim and
    FENSE read the captions as written (untokenized), with the sentence model ``sbert_model``.
    """
    metrics = _check_metric_names(metrics)
    check_metric_inputs(candidates, mult_references)
    cands, refs = ptb_tokenize_inputs(candidates, mult_references)
    report = CaptionReport()
    wanted = set(metrics)
    if "spider_fl" in wanted:
        wanted.add("spider")
    if "spider" in wanted:
        wanted.update(("cider_d", "spice"))
    if "fense" in wanted:
        wanted.add("sbert_sim")
    corpus, sentence = {}, {}  # every score computed, requested or needed by another

    def add(scores: tuple[dict[str, float], dict[str, list[float]]]) -> None:
        corpus.update(scores[0])
        sentence.update(scores[1])
        for name, values in scores[1].items():
            if name in metrics or name.startswith("bleu_") and "bleu" in metrics:
                report.corpus[name] = scores[0][name]
                report.sentence[name] = values

    def unavailable(name: str, reason: str) -> None:
        if name in metrics:
            report.unavailable[name] = reason

    if "bleu" in wanted:
        add(bleu(cands, refs, tokenize=False))
    if "meteor" in wanted:
        add(meteor(cands, refs, tokenize=False))
    if "rouge_l" in wanted:
        add(rouge_l(cands, refs, tokenize=False))
    if "cider_d" in wanted:
        add(cider_d(cands, refs, tokenize=False))
    if "spice" in wanted:
        reason = spice_unavailable_reason(corenlp_dir)
        if reason is None:
            try:
                add(spice(cands, refs, tokenize=False, corenlp_dir=corenlp_dir))
            except (MetricUnavailableError, RuntimeError) as err:
                reason = f"SPICE failed: {err}"
        if reason is None:
            if "spider" in wanted:
                add(combine_spider({"cider_d": corpus["cider_d"]}, {"cider_d": sentence["cider_d"]},
                                   {"spice": corpus["spice"]}, {"spice": sentence["spice"]}))
        else:
            unavailable("spice", reason)
            unavailable("spider", f"SPIDEr needs SPICE: {reason}")
            unavailable("spider_fl", f"SPIDEr-FL needs SPICE: {reason}")
    if "sbert_sim" in wanted:
        add(sbert_sim(candidates, mult_references, model=sbert_model))
        report.models["sbert_sim"] = sbert_model_name(sbert_model)
    if "fense" in wanted or "spider_fl" in wanted:
        try:
            errors = fluency_errors(candidates, echecker)
        except MetricUnavailableError as err:
            unavailable("fense", str(err))
            unavailable("spider_fl", report.unavailable.get("spider_fl", str(err)))
        else:
            for name, base in (("fense", "sbert_sim"), ("spider_fl", "spider")):
                if name in wanted and base in sentence:
                    add(fluency_penalised(name, sentence[base], errors))
                    report.models[name] = f"FENSE error checker {find_echecker(echecker).name}"
    return report


def _check_metric_names(metrics: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = tuple(m.strip() for m in metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise KeyError(f"Unknown metric(s) {unknown}; valid names: {list(ALL_METRICS)}")
    return tuple(metrics)


# ---------------------------------------------------------------- files


def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Read ``audio_id -> caption`` from JSON (``[{"audio_id", "caption"}]`` or ``{audio_id: caption}``) or a
    DCASE CSV (``file_name,caption_predicted``)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            items = list(data.items())
        elif isinstance(data, list) and all(isinstance(d, dict) and {"audio_id", "caption"} <= d.keys() for d in data):
            items = [(d["audio_id"], d["caption"]) for d in data]
        else:
            raise ValueError(f"{path}: expected a JSON list of {{'audio_id', 'caption'}} objects or an "
                             f"{{audio_id: caption}} object")
    elif path.suffix.lower() == ".csv":
        rows = read_csv(path, ("file_name", "caption_predicted"))
        items = [(r["file_name"], r["caption_predicted"]) for r in rows]
    else:
        raise ValueError(f"{path}: unknown predictions format (expected .json or .csv)")
    out: dict[str, str] = {}
    for audio_id, caption in items:
        if not isinstance(caption, str):
            raise ValueError(f"{path}: caption of {audio_id!r} is {type(caption).__name__}, expected a string")
        if str(audio_id) in out:
            raise ValueError(f"{path}: audio id {audio_id!r} is predicted more than once")
        out[str(audio_id)] = caption
    return out


def load_references(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``audio_id -> [captions]`` from JSON (``{audio_id: [captions]}``) or a Clotho captions CSV
    (``file_name,caption_1..caption_N``; empty cells are skipped)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(
                isinstance(v, list) and all(isinstance(c, str) for c in v) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object {{audio_id: [caption, ...]}}")
        out = {str(k): list(v) for k, v in data.items()}
    elif path.suffix.lower() == ".csv":
        rows = read_csv(path, ("file_name", "caption_1"))
        cols = [c for c in rows.header if c.startswith("caption_")]
        out = {}
        for r in rows:
            if r["file_name"] in out:
                raise ValueError(f"{path}: audio id {r['file_name']!r} appears more than once")
            out[r["file_name"]] = [r[c] for c in cols if r[c]]
    else:
        raise ValueError(f"{path}: unknown references format (expected .json or .csv)")
    empty = [k for k, v in out.items() if not v]
    if empty:
        raise ValueError(f"{path}: no reference caption for {len(empty)} audio id(s), e.g. {empty[:5]}")
    return out


def match_ids(predictions: dict[str, str], references: dict[str, list[str]]
              ) -> tuple[list[str], list[str], list[list[str]]]:
    """Align predictions with references by audio id (in the references' order); raise if the ids differ."""
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} audio id(s) have references but no prediction: {missing[:10]}")
        if extra:
            parts.append(f"{len(extra)} predicted audio id(s) have no references: {extra[:10]}")
        raise ValueError("Predictions and references do not cover the same audio ids; " + "; ".join(parts))
    ids = list(references)
    return ids, [predictions[k] for k in ids], [references[k] for k in ids]


def evaluate_files(predictions: str | os.PathLike, references: str | os.PathLike, *,
                   out: str | os.PathLike | None = None, metrics: tuple[str, ...] | list[str] | str = ALL_METRICS,
                   corenlp_dir: str | os.PathLike | None = None, sbert_model: str = SBERT_DEFAULT,
                   echecker: str | os.PathLike | None = None) -> dict:
    """Score a predictions file against a references file; return (and write to ``out`` if given)
    ``{"corpus": {...}, "per_clip": {audio_id: {...}}, "unavailable": {...}, "models": {...}}``."""
    ids, cands, refs = match_ids(load_predictions(predictions), load_references(references))
    report = caption_metrics(cands, refs, metrics=_check_metric_names(metrics), corenlp_dir=corenlp_dir,
                             sbert_model=sbert_model, echecker=echecker)
    result = {
        "corpus": report.corpus,
        "per_clip": {k: {m: v[i] for m, v in report.sentence.items()} for i, k in enumerate(ids)},
        "unavailable": report.unavailable,
        "models": report.models,
    }
    if out is not None:
        # NaN (a SPICE score can be undefined) is written as null to keep the file valid JSON.
        write_text_atomic(out, json.dumps(_nan_to_none(result), indent=2, ensure_ascii=False))
    return result


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def format_table(result: dict) -> str:
    """A two-column text table of corpus scores and unavailable metrics."""
    lines = [f"{'metric':<10} {'score':>8}"]
    lines += [f"{name:<10} {score:>8.4f}" for name, score in result["corpus"].items()]
    lines += [f"{name:<10} {'n/a':>8}  ({reason})" for name, reason in result["unavailable"].items()]
    lines += [f"{name} with {model}" for name, model in result.get("models", {}).items()]
    return "\n".join(lines)


def main(predictions: str, references: str, out: str | None = None, metrics: str = ",".join(ALL_METRICS),
         corenlp_dir: str | None = None, sbert_model: str = SBERT_DEFAULT, echecker: str | None = None) -> None:
    """Score captions: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr (PTB-tokenized, pycocoevalcap), and the
    semantic SBERT-sim, FENSE and SPIDEr-FL (on the captions as written).

    Args:
        predictions: JSON ([{"audio_id": ..., "caption": ...}] or {audio_id: caption}) or DCASE CSV
            (file_name,caption_predicted). Several systems: comma-separated files, scored one by one in this
            process, which starts METEOR's Java and loads the sentence model once and embeds the references once.
        references: JSON ({audio_id: [captions]}) or Clotho captions CSV (file_name,caption_1..caption_5).
            Audio ids must match the predictions exactly.
        out: optional JSON output with corpus scores, per-clip scores and unavailable metrics (with reasons); one
            per predictions file (comma-separated, in the same order).
        metrics: comma-separated subset of bleu,meteor,rouge_l,cider_d,spice,spider,sbert_sim,fense,spider_fl.
        corenlp_dir: folder with stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar for SPICE
            (default: $AAC_SPICE_LIB, then pycocoevalcap's spice/lib). Without them SPICE/SPIDEr are reported
            unavailable; nothing is downloaded.
        sbert_model: the sentence-transformers model of SBERT-sim and FENSE: minilm (the packaged
            all-MiniLM-L6-v2, the default) or a local folder (paraphrase-TinyBERT-L6-v2 for the published numbers);
            the output names it.
        echecker: FENSE's fluency-error checker (echecker_clotho_audiocaps_base.ckpt; default:
            $AAC_FENSE_ECHECKER), whose BERT (bert-base-uncased) must be a local folder or in the local Hugging Face
            cache. Without it FENSE and SPIDEr-FL are reported unavailable.
    """
    systems = checkpoint_paths(predictions, "predictions")
    outs = checkpoint_paths(out, "out") if out is not None else []
    for system in systems:  # before hours of scoring, not after
        if not Path(system).is_file():
            raise FileNotFoundError(f"{system}: no such predictions file")
    if out is not None and len(outs) != len(systems):
        raise ValueError(f"--out: {len(outs)} file(s) for {len(systems)} predictions file(s); give one each")
    for i, system in enumerate(systems):
        result = evaluate_files(system, references, out=outs[i] if outs else None, metrics=metrics,
                                corenlp_dir=corenlp_dir, sbert_model=sbert_model, echecker=echecker)
        print(f"{system}\n{format_table(result)}" if len(systems) > 1 else format_table(result))


if __name__ == "__main__":
    from common.cli import run

    run(main, "eval.captions")
