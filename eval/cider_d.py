"""CIDEr-D (Vedantam et al. 2015) through pycocoevalcap (its ``Cider`` is the CIDEr-D variant)."""
from pycocoevalcap.cider.cider import Cider

from ._coco import Scores, prepare


def cider_d(candidates: list[str], mult_references: list[list[str]], *, n: int = 4, sigma: float = 6.0,
            tokenize: bool = True) -> Scores:
    """CIDEr-D, key ``cider_d``; the corpus score is the mean of the per-sentence scores.

    Document frequencies come from the references of the scored set itself, so a score depends on the whole set
    (a set of one clip scores 0 since every n-gram then has idf log(1/1) = 0). For SCST rewards against fixed
    training statistics use :class:`eval.fast_cider.FastCiderD`.
    """
    res, gts = prepare(candidates, mult_references, tokenize)
    if not any(r.split() for refs in gts.values() for r in refs):
        # pycocoevalcap asserts on a corpus without any reference n-gram; nothing can match, so 0.
        return {"cider_d": 0.0}, {"cider_d": [0.0] * len(res)}
    corpus, sentence = Cider(n=n, sigma=sigma).compute_score(gts, res)
    return {"cider_d": float(corpus)}, {"cider_d": [float(x) for x in sentence]}
