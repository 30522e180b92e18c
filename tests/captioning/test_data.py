import pytest

from captioning.data import CaptionPairs, Clips, collate, load_captions, open_checked_store
from captioning.vocab import Vocabulary


def test_pairs_and_padded_batches(toy_data):
    captions = load_captions(toy_data["train_captions"])
    store = open_checked_store(toy_data["train_features"], {"encoder": "toy"}, need_ids=list(captions))
    vocab = Vocabulary.build(c for caps in captions.values() for c in caps)
    pairs = CaptionPairs(store, captions, vocab, max_words=4)
    assert len(pairs) == sum(len(c) for c in captions.values())  # one item per (clip, caption)
    items = [pairs[i] for i in range(5)]
    batch = collate(items)
    B, T, D = batch["frames"].shape
    assert (B, D) == (5, store.attrs["frame_dim"])
    assert T == int(batch["frame_lengths"].max()) == max(it["frames"].shape[0] for it in items)
    for b, it in enumerate(items):
        n = len(it["tokens"])
        assert n <= 6 and batch["token_lengths"][b] == n  # <bos> + at most 4 words + <eos>
        assert batch["tokens"][b, 0] == vocab.bos and batch["tokens"][b, n - 1] == vocab.eos
        assert (batch["tokens"][b, n:] == vocab.pad).all()
        assert (batch["frames"][b, batch["frame_lengths"][b]:] == 0).all()
    clips = collate([Clips(store)[0]])
    assert "tokens" not in clips and clips["audio_ids"] == [store.ids[0]]


def test_store_checks(toy_data, tmp_path):
    with pytest.raises(ValueError, match="encoder: expected 'cnn14'"):
        open_checked_store(toy_data["train_features"], {"encoder": "cnn14"})
    with pytest.raises(ValueError, match="no features for 1 captioned clip"):
        open_checked_store(toy_data["train_features"], None, need_ids=["nope.wav"])
    bad = tmp_path / "captions.json"
    bad.write_text('{"a": "not a list"}', encoding="utf-8")
    with pytest.raises(ValueError, match="captions.json: expected a mapping"):
        load_captions(bad)
