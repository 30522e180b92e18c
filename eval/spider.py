"""SPIDEr (Liu et al. 2017): the mean of CIDEr-D and SPICE."""
import os

from ._coco import Scores
from ._checks import check_metric_inputs
from .cider_d import cider_d
from .spice import spice
from .tokenizer import ptb_tokenize_inputs


def spider(candidates: list[str], mult_references: list[list[str]], *, tokenize: bool = True,
           corenlp_dir: str | os.PathLike | None = None) -> Scores:
    """SPIDEr with keys ``cider_d``, ``spice`` and ``spider``, per sentence and for the corpus.

    Needs SPICE, so it raises ``MetricUnavailableError`` where SPICE cannot run (see :mod:`eval.spice`).
    """
    check_metric_inputs(candidates, mult_references)
    if tokenize:
        candidates, mult_references = ptb_tokenize_inputs(candidates, mult_references)
    spice_corpus, spice_sents = spice(candidates, mult_references, tokenize=False, corenlp_dir=corenlp_dir)
    cider_corpus, cider_sents = cider_d(candidates, mult_references, tokenize=False)
    return combine_spider(cider_corpus, cider_sents, spice_corpus, spice_sents)


def combine_spider(cider_corpus: dict[str, float], cider_sents: dict[str, list[float]],
                   spice_corpus: dict[str, float], spice_sents: dict[str, list[float]]) -> Scores:
    """Merge CIDEr-D and SPICE results into SPIDEr results."""
    corpus = {**cider_corpus, **spice_corpus, "spider": (cider_corpus["cider_d"] + spice_corpus["spice"]) / 2}
    sents = {**cider_sents, **spice_sents,
             "spider": [(c + s) / 2 for c, s in zip(cider_sents["cider_d"], spice_sents["spice"])]}
    return corpus, sents
