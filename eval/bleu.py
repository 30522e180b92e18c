"""BLEU-1..n (Papineni et al. 2002) through pycocoevalcap."""
from pycocoevalcap.bleu.bleu import Bleu

from ._coco import Scores, prepare


def bleu(candidates: list[str], mult_references: list[list[str]], *, n: int = 4, tokenize: bool = True) -> Scores:
    """BLEU-1..``n``, keys ``bleu_1`` .. ``bleu_n``.

    The corpus score is pycocoevalcap's corpus BLEU (n-gram statistics pooled over the corpus, "closest" reference
    length), not the mean of the per-sentence scores. Pass ``tokenize=False`` for captions already PTB-tokenized.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"Invalid n. (expected an int >= 1, found {n!r})")
    res, gts = prepare(candidates, mult_references, tokenize)
    corpus, sentence = Bleu(n).compute_score(gts, res, verbose=0)
    names = [f"bleu_{k}" for k in range(1, n + 1)]
    return ({name: float(v) for name, v in zip(names, corpus)},
            {name: [float(x) for x in v] for name, v in zip(names, sentence)})
