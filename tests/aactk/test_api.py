"""The Python API (aactk.api) gives what the commands give: the same captions, rankings and labels, for files,
folders and arrays in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import aactk
from captioning.infer import infer
from features.audio import AudioError, load_audio
from retrieval.search import search_text
from tests.captioning.test_infer import models  # noqa: F401 - the random encoder and captioners on Clotho-mini


@pytest.fixture(scope="module")
def captioner(models):  # noqa: F811
    return aactk.Captioner.load(audio_encoder=str(models["encoder"]), captioners=f"{models['a']},{models['b']}")


def test_captions_of_a_folder_are_the_commands(models, captioner, tmp_path):  # noqa: F811
    expected = infer(str(models["audio"]), audio_encoder=str(models["encoder"]),
                     captioners=f"{models['a']},{models['b']}", progress=False)["captions"]
    rows = captioner.caption(models["audio"])
    assert [(r["audio_id"], r["caption"]) for r in rows] == list(expected.items())
    assert all(r["score"] < 0 and r["silent"] is False and Path(r["path"]).is_file() for r in rows)
    # a bad file among good ones: its row says why, the others are captioned
    (tmp_path / "empty.wav").write_bytes(b"")
    first = sorted(Path(models["audio"]).glob("*.wav"))[0]
    mixed = captioner.caption([first, tmp_path / "empty.wav"])
    assert mixed[0]["caption"] == expected[first.name] and mixed[1]["caption"] is None
    assert mixed[1]["audio_id"] == "empty.wav" and "empty" in mixed[1]["error"]


def test_arrays_are_captioned_as_the_same_audio_in_a_file(models, captioner, tmp_path):  # noqa: F811
    clip = sorted(Path(models["audio"]).glob("*.wav"))[0]
    samples, rate = sf.read(clip, dtype="float32")
    stereo = np.stack([samples, samples])  # (channels, samples)
    rows = captioner.caption([samples, stereo, stereo.T, np.zeros(rate)], sample_rate=rate)
    from_file = captioner.caption(clip)[0]
    assert [r["caption"] for r in rows[:3]] == [from_file["caption"]] * 3
    assert rows[0]["score"] == pytest.approx(from_file["score"], abs=1e-5) and rows[0]["path"] is None
    assert [r["silent"] for r in rows] == [False, False, False, True]
    at_rate = load_audio(clip, captioner.sample_rate)  # already at the encoder's rate: no resampling
    assert captioner.caption(at_rate, sample_rate=captioner.sample_rate)[0]["caption"] == from_file["caption"]
    with pytest.raises(ValueError, match="array 0: an array needs its sample_rate"):
        captioner.caption(samples)
    with pytest.raises(AudioError, match="array 0: non-finite samples"):
        captioner.caption(np.full(rate, np.nan), sample_rate=rate)
    with pytest.raises(ValueError, match="files and folders, or arrays"):
        captioner.caption([clip, samples], sample_rate=rate)


def test_retriever_embeds_searches_and_classifies_as_the_commands(trained, tiny_corpus, tmp_path):
    best = str(trained / "best.pt")
    retriever = aactk.Retriever.load(best)
    assert retriever.search("static hisses loudly", tiny_corpus["val"], top=5) == \
        [tuple(r) for r in search_text(best, str(tiny_corpus["val"]), "static hisses loudly", top=5)["results"]]
    files = sorted((tiny_corpus["val"].parent.parent / "wav").glob("val_*.wav"))[:4]
    audio, text = retriever.embed_audio(files), retriever.embed_text(["hissing noise", "low hum"])
    assert audio.shape[0] == 4 and text.shape == (2, audio.shape[1])
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    samples, rate = sf.read(files[0], dtype="float32")
    np.testing.assert_allclose(retriever.embed_audio(samples, sample_rate=rate)[0], audio[0], atol=1e-5)
    labels = retriever.classify(files[0], ["hissing noise", "low hum", "rapid clicks"])
    scores = retriever.embed_text([f"This is a sound of {x}." for x in ("hissing noise", "low hum", "rapid clicks")]) \
        @ audio[0]
    assert [label for label, _ in labels] == [["hissing noise", "low hum", "rapid clicks"][i] for i in
                                               np.argsort(-scores)]
    # an ensemble of the same model twice: side by side, a dot product is still the mean cosine similarity
    twice = aactk.Retriever.load(f"{best},{best}")
    np.testing.assert_allclose(twice.embed_text(["low hum"]) @ twice.embed_audio(files).T,
                               retriever.embed_text(["low hum"]) @ audio.T, atol=1e-5)


def test_an_index_built_and_opened_from_python_searches_as_the_retriever(trained, tiny_corpus, tmp_path):
    best = str(trained / "best.pt")
    folder = tmp_path / "sounds"
    folder.mkdir()
    for file in sorted((tiny_corpus["val"].parent.parent / "wav").glob("val_*.wav"))[:6]:
        (folder / file.name).write_bytes(file.read_bytes())
    aactk.build_index(folder, best, tmp_path / "sounds.h5")
    index = aactk.open_index(tmp_path / "sounds.h5")
    found = index.search("a rising siren", top=6)
    expected = aactk.Retriever.load(best).search("a rising siren", folder, top=6)
    assert [name for name, _ in found] == [name for name, _ in expected]
    np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
