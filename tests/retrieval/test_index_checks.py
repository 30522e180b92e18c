"""Indexes are shared between people: a forged or damaged one is refused when opened, naming the file and what is
wrong, and an opened index never hands out a file outside its folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrieval.index import AudioIndex, read_index, sync

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def built(trained, tiny_corpus, tmp_path) -> Path:
    """A real index of three clips."""
    library = tmp_path / "library"
    library.mkdir()
    for wav in sorted((tiny_corpus["val"].parent.parent / "wav").glob("val_*.wav"))[:3]:
        shutil.copy(wav, library / wav.name)
    sync(library, str(trained / "best.pt"), tmp_path / "index.h5")
    return tmp_path / "index.h5"


def _forge(source: Path, out: Path, edit) -> Path:
    shutil.copy(source, out)
    with h5py.File(out, "r+") as f:
        edit(f)
    return out


def _replace(f: h5py.File, name: str, data) -> None:
    del f[name]
    f[name] = data


def test_forged_structures_are_refused_in_one_line(built, tmp_path):
    cases = {
        "huge": (lambda f: (_replace_huge(f)), r"declares \(2000000, \d+\) values but stores"),
        "paths": (lambda f: _replace(f, "paths", np.array([b"a.wav"], dtype=h5py.string_dtype())),
                  r"'sizes' has shape \(3,\), expected \(1,\)"),
        "dims": (lambda f: _replace(f, "embeddings/0", np.zeros((3, 2, 2), np.float32)),
                 r"embeddings/0 has shape \(3, 2, 2\)"),
        "provenance": (lambda f: f.attrs.__setitem__("provenance", "{not json"), r"its 'provenance' is not JSON"),
        "no folder": (lambda f: f.attrs.__setitem__("provenance", json.dumps({"checkpoints": []})),
                      "lacks the folder or the checkpoints"),
        "outside": (lambda f: _replace(f, "paths", np.array([b"../x.wav", b"b.wav", b"c.wav"],
                                                            dtype=h5py.string_dtype())),
                    r"holds the path '\.\./x\.wav'"),
        "absolute": (lambda f: _replace(f, "paths", np.array([b"/etc/passwd", b"b.wav", b"c.wav"],
                                                             dtype=h5py.string_dtype())),
                     r"holds the path '/etc/passwd'"),
        "nan": (lambda f: _set_nan(f), "non-finite values"),
    }
    for name, (edit, says) in cases.items():
        forged = _forge(built, tmp_path / f"{name.replace(' ', '_')}.h5", edit)
        with pytest.raises(ValueError, match=rf"{forged}: .*{says}"):
            read_index(forged)


def _replace_huge(f: h5py.File) -> None:
    dim = f["embeddings/0"].shape[1]
    del f["embeddings/0"]
    f.create_dataset("embeddings/0", shape=(2_000_000, dim), dtype=np.float32, chunks=(1024, dim))  # nothing stored
    _replace(f, "paths", np.array([b"x.wav"] * 2_000_000, dtype=h5py.string_dtype()))
    _replace(f, "sizes", np.zeros(2_000_000, np.int64))
    _replace(f, "mtimes", np.zeros(2_000_000, np.int64))
    _replace(f, "durations", np.zeros(2_000_000))
    _replace(f, "captions", np.array([b""] * 2_000_000, dtype=h5py.string_dtype()))


def _set_nan(f: h5py.File) -> None:
    emb = f["embeddings/0"][:]
    emb[1, 0] = np.nan
    _replace(f, "embeddings/0", emb)


def test_no_file_outside_the_folder_is_handed_out(built, tmp_path):
    """An index recording the root folder and 'etc/passwd', and a symlink in the folder pointing out of it."""
    index = AudioIndex(built)
    target = index.folder / index.paths[0]
    outside = tmp_path / "secret.wav"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(outside, target)  # the indexed name now leads out of the folder
    with pytest.raises(KeyError):
        index.file(index.paths[0])
    assert index.file(index.paths[1]).is_file()

    def root(f: h5py.File) -> None:
        provenance = json.loads(f.attrs["provenance"])
        f.attrs["provenance"] = json.dumps({**provenance, "folder": "/"})
        _replace(f, "paths", np.array([b"etc/passwd", b"etc/x.wav", b"etc/y.wav"], dtype=h5py.string_dtype()))

    forged = AudioIndex(_forge(built, tmp_path / "root.h5", root))
    with pytest.raises(KeyError):  # not an audio file, whatever the index says
        forged.file("etc/passwd")


def test_a_full_disk_during_an_update_names_the_device_and_keeps_the_old_index(trained, tiny_corpus, small_disk,
                                                                               tmp_path):
    wavs = sorted((tiny_corpus["val"].parent.parent / "wav").glob("val_*.wav"))
    library = tmp_path / "library"
    library.mkdir()
    for wav in wavs[:3]:
        shutil.copy(wav, library / wav.name)
    index = small_disk.path / "index.h5"
    sync(library, str(trained / "best.pt"), index)
    stale = small_disk.path / ".index.h5.tmp999999999"  # left by a build that died (no such process)
    stale.write_bytes(b"half an index")
    for wav in wavs[3:6]:
        shutil.copy(wav, library / wav.name)
    small_disk.fill()
    done = subprocess.run([sys.executable, "-m", "retrieval.index", "update", "--index", str(index)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and f"No space left on tmpfs (mounted at {small_disk.path})" in done.stderr, \
        done.stderr
    assert len(read_index(index)["paths"]) == 3  # the old index, whole
    small_disk.free()
    assert sync(library, str(trained / "best.pt"), index)["embedded"] == 3
    assert len(read_index(index)["paths"]) == 6
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["index.h5"]  # no temporaries, old or new


def test_a_part_holding_pickled_data_is_refused_naming_it(trained, tiny_corpus, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    for wav in sorted((tiny_corpus["val"].parent.parent / "wav").glob("val_*.wav"))[:2]:
        shutil.copy(wav, library / wav.name)
    index = tmp_path / "index.h5"
    assert sync(library, str(trained / "best.pt"), index, chunk_files=1, stop_after_parts=1) == {"stopped": True}
    (part,) = Path(f"{index}.parts").glob("part_*.npz")
    with np.load(part) as z:
        arrays = dict(z)
    arrays["names"] = np.array([{"not": "a name"}], dtype=object)
    with open(part, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=rf"{part}: refused: its 'names' is an object array \(pickled Python data\)"):
        sync(library, str(trained / "best.pt"), index, chunk_files=1)
