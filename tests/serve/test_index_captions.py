"""An index shows what each sound is: its duration and a caption, from the prepared split the files come from or
written by a caption bundle when the file is indexed; an update captions new files the same way."""
from __future__ import annotations

import shutil

import pytest
import soundfile as sf

from captioning.bundle import load_bundle
from captioning.infer import caption_files
from features.manifest import read_manifest
from retrieval.index import AudioIndex, read_index, sync, update


def test_captions_from_the_split_and_durations(index_file, library, tiny_corpus):
    index = read_index(index_file)
    firsts = {audio_id: caps[0] for audio_id, caps in read_manifest(tiny_corpus["val"]).captions.items()}
    assert index["captions"] == [firsts[name.split("/")[-1].removesuffix(".wav")] for name in index["paths"]]
    assert index["durations"] == pytest.approx([sf.info(str(library / p)).duration for p in index["paths"]], abs=1e-3)
    assert AudioIndex(index_file).about[index["paths"][0]] == {"caption": index["captions"][0],
                                                               "duration": round(index["durations"][0], 2)}


def test_a_bundle_captions_each_file_once_and_an_update_the_new_ones(trained, library, bundle_file, tmp_path):
    folder = tmp_path / "sounds"
    shutil.copytree(library / "tones", folder)
    out = tmp_path / "index.h5"
    sync(folder, str(trained / "best.pt"), out, bundle=bundle_file)
    pipeline = load_bundle(bundle_file)
    files = sorted(folder.rglob("*.wav"))
    expected = caption_files(pipeline, files).captions
    index = read_index(out)
    assert index["captions"] == [expected[str(folder / p)] for p in index["paths"]] and all(index["captions"])
    new = folder / "more" / "copy.wav"
    new.parent.mkdir()
    shutil.copy(files[0], new)
    assert update(str(out))["embedded"] == 1  # the new file alone, captioned as the others were
    again = read_index(out)
    assert dict(zip(again["paths"], again["captions"])) == {**dict(zip(index["paths"], index["captions"])),
                                                           "more/copy.wav": expected[str(files[0])]}
    with pytest.raises(ValueError, match="not both"):
        sync(folder, str(trained / "best.pt"), tmp_path / "both.h5", captions=str(folder), bundle=bundle_file)
