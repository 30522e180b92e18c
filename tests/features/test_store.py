"""The HDF5 feature store: round trip, refusals, and reading from DataLoader worker processes."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from features.store import STORE_FORMAT, create_store, open_store

AWKWARD_IDS = ["plain", "with space", "comma, and more", "a/b/c", "ünïcødé 音", "../up", ".", "tab\tid", "x" * 300]


def _attrs(dtype: str = "float32", frame_dim: int = 6, clip_dim: int = 4) -> dict:
    return {"encoder": "cnn14", "encoder_spec": {"name": "cnn14", "width": 0.25}, "checkpoint_sha256": "ab" * 32,
            "sample_rate": 16000, "frame_hop": 5120, "frame_dim": frame_dim, "clip_dim": clip_dim, "dtype": dtype}


def _write(path: Path, dtype: str = "float32", ids: list[str] = AWKWARD_IDS, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = {i: (rng.standard_normal((int(rng.integers(1, 40)), 6)).astype(np.float32),
                rng.standard_normal(4).astype(np.float32)) for i in ids}
    missing = {"bad, clip/1": "not a readable audio file"}
    with create_store(path, _attrs(dtype), ids, [len(data[i][0]) for i in ids], missing) as writer:
        for audio_id in reversed(ids):  # any write order
            writer.put(audio_id, *data[audio_id])
        writer.commit()
    return data, missing


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_awkward_ids(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "train.h5"
    data, missing = _write(path, dtype)
    store = open_store(path)
    assert store.ids == AWKWARD_IDS and len(store) == len(AWKWARD_IDS)
    assert all(i in store for i in AWKWARD_IDS) and "bad, clip/1" not in store and "nope" not in store
    for audio_id, (frames, clip) in data.items():
        got = store.frames(audio_id)
        assert got.dtype == np.dtype(dtype) and got.shape == frames.shape
        np.testing.assert_array_equal(got, frames.astype(dtype))
        np.testing.assert_array_equal(store.clip(audio_id), clip.astype(dtype))
        assert store.num_frames(audio_id) == len(frames)
    assert store.missing == missing
    assert store.attrs["format"] == STORE_FORMAT and store.attrs["complete"] is True
    assert store.attrs["dtype"] == dtype and store.attrs["frame_dim"] == 6
    with pytest.raises(KeyError, match="not a readable audio file"):
        store.frames("bad, clip/1")
    # awkward ids never became HDF5 names
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["audio_ids", "clips", "frames", "missing_ids", "missing_reasons", "offsets"]
    store.close()


def test_same_content_same_bytes(tmp_path: Path) -> None:
    _write(tmp_path / "a.h5")
    _write(tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_empty_store(tmp_path: Path) -> None:
    with create_store(tmp_path / "e.h5", _attrs(), [], [], {"x": "too short"}) as writer:
        writer.commit()
    store = open_store(tmp_path / "e.h5")
    assert len(store) == 0 and store.missing == {"x": "too short"}


def test_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        open_store(tmp_path / "absent.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["frames"] = np.zeros((3, 2))
        f.attrs["encoder"] = "cnn14"
    with pytest.raises(ValueError, match=r"foreign\.h5: not a feature store"):
        open_store(foreign)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"text\.h5: not a readable HDF5 file"):
        open_store(text)


def test_refuses_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    _write(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"s\.h5: "):
        open_store(path)


def test_refuses_incomplete_store(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    _write(path)
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(ValueError, match=r"s\.h5: feature store is incomplete"):
        open_store(path)


def test_refuses_mismatched_expectation(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    _write(path)
    open_store(path, expect={"encoder": "cnn14", "sample_rate": 16000, "encoder_spec": {"width": 0.25,
                                                                                        "name": "cnn14"}})
    with pytest.raises(ValueError) as err:
        open_store(path, expect={"encoder": "cnn10", "sample_rate": 32000, "frame_dim": 6, "hop": 1})
    message = str(err.value)
    assert "s.h5" in message and "frame_dim" not in message
    assert "encoder: expected 'cnn10', found 'cnn14'" in message
    assert "sample_rate: expected 32000, found 16000" in message
    assert "hop: expected 1, found '<absent>'" in message
    with pytest.raises(ValueError, match="encoder_spec"):
        open_store(path, expect={"encoder_spec": {"name": "cnn14", "width": 1.0}})


def test_writer_refuses_unwritten_ids_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    writer = create_store(path, _attrs(), ["a", "b"], [2, 3])
    writer.put("a", np.zeros((2, 6)), np.zeros(4))
    with pytest.raises(ValueError, match="never written"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="do not match"):
        with create_store(path, _attrs(), ["a"], [2]) as w:
            w.put("a", np.zeros((3, 6)), np.zeros(4))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="duplicate"):
        create_store(path, _attrs(), ["a", "a"], [1, 1])
    with pytest.raises(ValueError, match="Invalid dtype"):
        create_store(path, _attrs(dtype="int8"), ["a"], [1])


class _Frames(Dataset):
    def __init__(self, store) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, torch.from_numpy(self.store.frames(self.store.ids[i]).copy())


def test_dataloader_workers(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    data, _ = _write(path)
    store = open_store(path)
    store.frames(AWKWARD_IDS[0])  # the parent opens its handle before the workers fork
    loader = DataLoader(_Frames(store), batch_size=None, num_workers=2, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    seen = {}
    for i, frames in loader:
        seen[int(i)] = frames
    assert sorted(seen) == list(range(len(AWKWARD_IDS)))
    for i, audio_id in enumerate(AWKWARD_IDS):
        np.testing.assert_array_equal(seen[i].numpy(), data[audio_id][0])
    np.testing.assert_array_equal(store.frames(AWKWARD_IDS[1]), data[AWKWARD_IDS[1]][0])  # parent still reads


def test_non_finite_features_are_never_written_and_a_store_holding_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    with create_store(path, _attrs("float16"), ["a"], [2]) as writer:
        with pytest.raises(ValueError, match=r"'a': non-finite values \(NaN or inf\)"):
            writer.put("a", np.full((2, 6), 1e5, np.float32), np.zeros(4, np.float32))  # past float16's 65504
    assert list(tmp_path.iterdir()) == []
    _write(path)
    with h5py.File(path, "r+") as f:  # damaged or forged elsewhere
        f["frames"][0, 0] = np.nan
    store = open_store(path)
    first = min(store.ids, key=lambda i: store._offsets[store.ids.index(i)])
    with pytest.raises(ValueError, match=rf"{path}: {first!r}: non-finite values"):
        store.frames(first)
    store.clip(first)  # its clip embedding is finite


def test_a_store_too_big_for_the_disk_is_refused_before_writing(small_disk) -> None:
    path = small_disk.path / "train.h5"
    with pytest.raises(OSError, match=rf"No space left on tmpfs \(mounted at {small_disk.path}\): train.h5 needs "
                                      r"about 19.5 MB"):
        create_store(path, _attrs(frame_dim=512), ["a"], [10_000])
    assert list(small_disk.path.iterdir()) == []
