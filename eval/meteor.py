"""METEOR 1.5 (Denkowski & Lavie 2014) through pycocoevalcap's jar (needs Java)."""
from pycocoevalcap.meteor.meteor import Meteor

from ._coco import Scores, prepare
from ._java import require_java


def meteor(candidates: list[str], mult_references: list[list[str]], *, tokenize: bool = True) -> Scores:
    """METEOR, key ``meteor``. The corpus score is METEOR's own aggregate over the corpus (as pycocoevalcap
    reports it), not the mean of the per-sentence scores. Starting the jar takes several seconds."""
    res, gts = prepare(candidates, mult_references, tokenize)
    # '|||' separates fields in METEOR's stdin protocol; pycocoevalcap strips it from candidates only.
    gts = {k: [r.replace("|||", " ") for r in refs] for k, refs in gts.items()}
    require_java("METEOR")
    scorer = Meteor()
    try:
        corpus, sentence = scorer.compute_score(gts, res)
    finally:
        del scorer  # stops the JVM
    return {"meteor": float(corpus)}, {"meteor": [float(x) for x in sentence]}
