import pytest

from captioning.baseline import consensus_captions, nearest_neighbour
from tests.captioning.conftest import SOUNDS, write_split


def test_consensus_caption_is_the_one_others_agree_with():
    captions = {"a": ["a dog barks loudly", "rain on a roof", "a dog barks", "the dog barks loudly"]}
    assert consensus_captions(captions)["a"] in ("a dog barks loudly", "a dog barks")
    assert consensus_captions({"b": ["only one"]}) == {"b": "only one"}


def test_each_clip_gets_a_caption_of_its_nearest_training_clip(toy_data, tmp_path):
    out = tmp_path / "nn.json"
    predictions = nearest_neighbour(str(toy_data["train_features"]), str(toy_data["train_captions"]),
                                    str(toy_data["val_features"]), out=str(out), csv=str(tmp_path / "nn.csv"))
    assert len(predictions) == 8 and out.is_file()
    for i, (audio_id, caption) in enumerate(sorted(predictions.items())):
        assert caption in SOUNDS[i % len(SOUNDS)], (audio_id, caption)  # the toy clips carry their sound class


def test_refuses_stores_from_different_encoders(toy_data, tmp_path):
    other, _ = write_split(tmp_path, "other", 4, seed=3, encoder="another")
    with pytest.raises(ValueError, match="encoder 'another' differs"):
        nearest_neighbour(str(toy_data["train_features"]), str(toy_data["train_captions"]), str(other))
