"""ROUGE-L (Lin 2004, F-measure with beta = 1.2) through pycocoevalcap."""
from pycocoevalcap.rouge.rouge import Rouge

from ._coco import Scores, prepare


def rouge_l(candidates: list[str], mult_references: list[list[str]], *, tokenize: bool = True) -> Scores:
    """ROUGE-L, key ``rouge_l``; the corpus score is the mean of the per-sentence scores."""
    res, gts = prepare(candidates, mult_references, tokenize)
    corpus, sentence = Rouge().compute_score(gts, res)
    return {"rouge_l": float(corpus)}, {"rouge_l": [float(x) for x in sentence]}
