"""FastCiderD against pycocoevalcap's CiderD on Clotho captions (real where present, else generated)."""
import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from eval.fast_cider import FastCiderD, fast_cider_d
from eval.tokenizer import ptb_tokenize_inputs


def _pycoco_cider(cands: list[str], refs: list[list[str]]) -> tuple[float, np.ndarray]:
    score, scores = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)})
    return score, np.asarray(scores)


@pytest.fixture(scope="module")
def tokenized(eval_captions, candidate_maker):
    """600 clips with mixed candidates, PTB-tokenized (strings of space-separated tokens)."""
    _, mult_refs = eval_captions
    cands, refs = candidate_maker(mult_refs[:600], seed=1)
    return ptb_tokenize_inputs(cands, refs)


def test_equals_pycocoevalcap_clip_by_clip(tokenized):
    cands, refs = tokenized
    expected_corpus, expected = _pycoco_cider(cands, refs)
    corpus, sents = fast_cider_d([c.split() for c in cands], [[r.split() for r in rs] for rs in refs])
    np.testing.assert_allclose(sents["cider_d"], expected, rtol=0, atol=1e-6)
    assert corpus["cider_d"] == pytest.approx(expected_corpus, abs=1e-6)
    assert expected.max() > 1.0  # held-out references score high: the comparison is not all zeros


def test_strings_with_whitespace_tokenizer_match_word_lists(tokenized):
    cands, refs = tokenized
    _, as_lists = fast_cider_d([c.split() for c in cands[:100]], [[r.split() for r in rs] for rs in refs[:100]])
    _, as_strings = fast_cider_d(cands[:100], refs[:100], tokenizer=str.split)
    assert as_lists == as_strings


def test_scorer_built_once_scores_batches_with_duplicate_clips(tokenized):
    cands, refs = tokenized
    keys = [f"clip{i}" for i in range(len(refs))]
    scorer = FastCiderD({k: [r.split() for r in rs] for k, rs in zip(keys, refs)})
    _, expected = _pycoco_cider(cands, refs)
    # A batch of 64 clips x 5 samples, each clip repeated with different candidates, then one clip twice in a row.
    rng = np.random.default_rng(0)
    clip_idx = np.repeat(rng.choice(len(refs), size=64, replace=False), 5)
    sample_idx = rng.integers(0, len(cands), size=len(clip_idx))
    batch_keys = [keys[i] for i in clip_idx] + [keys[3], keys[3]]
    batch_cands = [cands[j].split() for j in sample_idx] + [cands[3].split(), cands[3].split()]
    scores = scorer.score(batch_cands, batch_keys)
    assert scores.shape == (len(batch_keys),)
    # Same document frequencies as the whole set, so the clip's own candidate must match pycocoevalcap...
    assert scores[-1] == pytest.approx(expected[3], abs=1e-6) and scores[-2] == scores[-1]
    # ...and each pair equals scoring it alone.
    for b in range(0, len(batch_keys), 37):
        assert scores[b] == pytest.approx(scorer.score([batch_cands[b]], [batch_keys[b]])[0], abs=1e-12)


def test_default_tokenizer_lowercases_and_strips_punctuation():
    refs = [["A dog barks loudly.", "The dog is barking!"], ["Rain falls on a roof.", "Heavy rain."]]
    scorer = FastCiderD(refs)
    shouted, plain = scorer.score(["A DOG, BARKS loudly!!", "a dog barks loudly"], [0, 0])
    assert shouted == plain > 0


def test_unknown_key_and_bad_input_raise():
    scorer = FastCiderD({"a": ["x y"], "b": ["y z"]})
    with pytest.raises(KeyError, match="'c'"):
        scorer.score(["x"], ["c"])
    with pytest.raises(ValueError, match="as many keys"):
        scorer.score(["x", "y"], ["a"])
    with pytest.raises(ValueError, match="Invalid candidates"):
        scorer.score([3], ["a"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Invalid references"):
        FastCiderD({"a": []})


def test_empty_candidates_score_zero():
    scorer = FastCiderD([["a dog barks"], ["rain falls"], ["birds sing"]])
    np.testing.assert_array_equal(scorer.score(["", []], [0, 1]), [0.0, 0.0])
