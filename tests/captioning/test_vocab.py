import csv

import pytest

from captioning.vocab import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_strips_punctuation():
    assert tokenize("A dog's bark, then... SILENCE!") == ["a", "dog", "s", "bark", "then", "silence"]


def test_build_min_count_order_and_round_trip():
    vocab = Vocabulary.build(["a dog barks", "A dog runs.", "cat"], min_count=2)
    assert vocab.words == list(SPECIALS) + ["a", "dog"]
    ids = vocab.encode("A dog meows")
    assert ids == [vocab.bos, vocab.index["a"], vocab.index["dog"], vocab.unk, vocab.eos]
    assert vocab.decode(ids) == "a dog <unk>"
    assert vocab.decode([vocab.index["dog"], vocab.eos, vocab.index["a"]]) == "dog"
    assert Vocabulary(list(vocab.words)) == vocab  # plain data round trip, as stored in checkpoints


def test_bad_vocabulary_rejected():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)


def test_real_clotho_captions(real_captions):
    """Real Clotho development captions: vocabulary size and coverage in a plausible range."""
    with open(real_captions / "clotho_v1_captions_development.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    captions = [row[f"caption_{i}"] for row in rows for i in range(1, 6)]
    vocab = Vocabulary.build(captions, min_count=5)
    assert 2000 < len(vocab) < 6000
    assert all(w == w.lower() and w.isalnum() for w in vocab.words[len(SPECIALS):])
    words = [w for c in captions for w in tokenize(c)]
    unknown = sum(w not in vocab.index for w in words) / len(words)
    assert unknown < 0.03
