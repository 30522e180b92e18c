"""Keyword-to-caption: the template, de-biasing, a real (tiny, random) causal LM writing captions greedily and
cached, and a generator folder that cannot load."""
from __future__ import annotations

import json

import pytest

from corpus import keywords
from corpus.keywords import caption_manifest, debias, first_sentence, template_caption, write_captions
from features.manifest import AudioEntry, Manifest, read_manifest, write_manifest


def test_template_and_debiasing():
    assert template_caption(["dog"]) == "The sound of dog."
    assert template_caption(["dog", "rain", "siren"]) == "The sound of dog, rain and siren."
    assert debias("A woman talks while men laugh; Man coughs. Germany, manual") == \
        "A person talks while people laugh; Person coughs. Germany, manual"
    assert first_sentence('\n "A dog barks loudly. Then rain"\nmore') == "A dog barks loudly."
    assert first_sentence("a bell rings") == "a bell rings." and first_sentence("  \n ") == ""


@pytest.fixture
def labelled(tmp_path):
    audio = [AudioEntry(f"c{k}.wav", f"/x/c{k}.wav", 1.0, 16000, 1) for k in range(4)]
    labels = {"c0.wav": ["dog"], "c1.wav": ["dog", "rain"], "c2.wav": ["dog"]}  # c3 has none: left out
    return write_manifest(Manifest("fold1", audio, {}, labels=labels), tmp_path / "in")


def test_template_captions_a_labelled_split(labelled, tmp_path):
    result = caption_manifest(labelled, tmp_path / "out", progress=False)
    split = read_manifest(result["split_dir"])
    assert split.captions == {"c0.wav": ["The sound of dog."], "c1.wav": ["The sound of dog and rain."],
                              "c2.wav": ["The sound of dog."]}
    assert split.labels == read_manifest(labelled).labels and result["fallbacks"] == 0
    with pytest.raises(ValueError, match="no labels.json"):
        caption_manifest(write_manifest(Manifest("u", split.audio, {}), tmp_path / "u"), tmp_path / "o")


def test_an_lm_writes_captions_once_greedily_and_caches_them(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("AACTK_CACHE", str(tmp_path / "cache"))
    lists = [["dog"], ["dog", "rain"], ["dog"]]
    captions, fallbacks = write_captions(lists, str(tiny_lm), batch_size=2, progress=False)
    assert len(captions) == 3 and captions[0] == captions[2]  # one label list, one caption
    assert all(c for c in captions) and fallbacks <= 3
    cache = list((tmp_path / "cache" / "keywords").glob("*.json"))
    assert len(cache) == 1 and len(json.loads(cache[0].read_text(encoding="utf-8"))) == 2  # distinct lists only

    def refuse(*_):
        raise AssertionError("generated again")
    monkeypatch.setattr(keywords.Generator, "__call__", refuse)
    assert write_captions(lists, str(tiny_lm), progress=False) == (captions, fallbacks)  # from the cache


def test_a_generator_that_cannot_load_is_named(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(ValueError, match=r"generator '.*broken': .*broken does not load as a text generator"):
        write_captions([["dog"]], str(tmp_path / "broken"), progress=False)
    with pytest.raises(ValueError, match="not an alias"):
        write_captions([["dog"]], str(tmp_path / "absent"), progress=False)
