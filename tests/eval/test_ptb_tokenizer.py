"""The project's PTB tokenizer call against pycocoevalcap's wrapper, and its robustness."""
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from eval.tokenizer import ptb_tokenize, ptb_tokenize_inputs, simple_tokenize


def test_ptb_tokenize_equals_pycocoevalcap_on_captions(parity_set):
    _, cands, refs = parity_set
    sentences = cands + [r for rs in refs for r in rs]
    theirs = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    ours = ptb_tokenize(sentences)
    assert ours == [theirs[i][0] for i in range(len(sentences))]


def test_line_breaks_inside_captions_do_not_shift_alignment():
    sentences = ["a dog\u2028barks", "rain\rfalls\non a roof", "", "...", "Birds sing."]
    assert ptb_tokenize(sentences) == ["a dog barks", "rain falls on a roof", "", "", "birds sing"]


def test_ptb_tokenize_inputs_keeps_nesting():
    cands, refs = ptb_tokenize_inputs(["A Cat!", ""], [["It's raining."], ["x, y", "Z"]])
    assert cands == ["a cat", ""]
    assert refs == [["it 's raining"], ["x y", "z"]]


def test_simple_tokenize():
    assert simple_tokenize("A dog's well-known BARK, twice!") == ["a", "dog", "s", "well", "known", "bark", "twice"]
    assert simple_tokenize("...") == []
