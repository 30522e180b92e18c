"""Shared plumbing between the metric files and pycocoevalcap's scorers."""
from ._checks import check_metric_inputs
from .tokenizer import ptb_tokenize_inputs

Scores = tuple[dict[str, float], dict[str, list[float]]]


def prepare(candidates: list[str], mult_references: list[list[str]], tokenize: bool
            ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Check inputs, PTB-tokenize them if asked, and return pycocoevalcap's ``(res, gts)`` dicts keyed by position."""
    check_metric_inputs(candidates, mult_references)
    if tokenize:
        candidates, mult_references = ptb_tokenize_inputs(candidates, mult_references)
    res = {i: [c] for i, c in enumerate(candidates)}
    gts = {i: list(refs) for i, refs in enumerate(mult_references)}
    return res, gts
