"""METEOR 1.5 (Denkowski & Lavie 2014) through pycocoevalcap's jar (needs Java)."""
import atexit

from pycocoevalcap.meteor.meteor import Meteor

from ._coco import Scores, prepare
from ._java import require_java

_scorer: Meteor | None = None  # the jar's process, kept up for this process's later calls (several systems scored)


def meteor(candidates: list[str], mult_references: list[list[str]], *, tokenize: bool = True) -> Scores:
    """METEOR, key ``meteor``. The corpus score is METEOR's own aggregate over the corpus (as pycocoevalcap
    reports it), not the mean of the per-sentence scores. Starting the jar takes about 12 s, scoring 300 captions
    about 2 s: the first call starts it, later calls in the same process reuse it."""
    global _scorer
    res, gts = prepare(candidates, mult_references, tokenize)
    # '|||' separates fields in METEOR's stdin protocol; pycocoevalcap strips it from candidates only.
    gts = {k: [r.replace("|||", " ") for r in refs] for k, refs in gts.items()}
    require_java("METEOR")
    if _scorer is None:
        _scorer = Meteor()
        atexit.register(_stop)
    try:
        corpus, sentence = _scorer.compute_score(gts, res)
    except BaseException:
        _stop()  # the jar's reply stream is out of step now: the next call starts a fresh one
        raise
    return {"meteor": float(corpus)}, {"meteor": [float(x) for x in sentence]}


def _stop() -> None:
    global _scorer
    scorer, _scorer = _scorer, None
    if scorer is not None and scorer.lock.locked():  # left held when scoring fails; its __del__ would wait forever
        scorer.lock.release()
    del scorer  # pycocoevalcap's __del__ stops the JVM
