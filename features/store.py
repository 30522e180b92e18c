"""The HDF5 feature store: one file per split, frame features and a clip embedding per audio id.

Layout (``format`` = :data:`STORE_FORMAT`)::

    audio_ids      [N]        UTF-8 strings, in manifest order
    offsets        [N + 1]    int64; clip i's frames are rows offsets[i]:offsets[i + 1] of ``frames``
    frames         [sum T, D] all clips' frame features, concatenated
    clips          [N, D_c]   clip embeddings
    missing_ids    [M]        UTF-8 ids of the split that have no features (bad audio)
    missing_reasons[M]        UTF-8 why each is missing

Why one concatenated dataset and an offsets index rather than one dataset per id: ids can hold any character
(HDF5 names cannot hold '/' and '.' is special), thousands of small datasets make opening a file slow and each read
walks a B-tree, while here opening reads two small arrays once and every clip is one contiguous read. The big
datasets use HDF5's contiguous layout (no chunking, no compression): a random read of one clip is a single
``pread`` of exactly its bytes, with no chunk cache to thrash across DataLoader workers.

Root attributes say what made the store (see :data:`REQUIRED_ATTRS`); ``complete`` is True only once every id of the
split is either written or listed as missing. Stores are written to ``common.io``'s temporary name
(``.<name>.tmp<pid>``) and renamed into place, so a killed writer never leaves a file at the final path.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from common.io import check_free_space, output_failed, put_in_place, remove_stale_temps, temp_path

STORE_FORMAT = "aactk-features-1"
REQUIRED_ATTRS = ("format", "complete", "encoder", "encoder_spec", "checkpoint_sha256", "sample_rate", "frame_hop",
                  "frame_dim", "clip_dim", "dtype")
DTYPES = ("float16", "float32")
_STR = h5py.string_dtype("utf-8")
NON_FINITE = "non-finite values (NaN or inf) in its features"


def _plain(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (numpy scalars and byte strings unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _same(expected: Any, found: Any) -> bool:
    if isinstance(expected, Mapping):  # e.g. encoder_spec given as a dict, stored as JSON text
        try:
            return json.loads(found) == json.loads(json.dumps(expected))
        except (TypeError, ValueError):
            return False
    return expected == found


# ---- reading --------------------------------------------------------------------------------------------------
class FeatureStore:
    """Random access to a finished store, without loading it into memory.

    The HDF5 file is opened lazily by the process that first reads from it and reopened after a fork, so one
    ``FeatureStore`` can be handed to a ``torch.utils.data.DataLoader`` with worker processes.
    """

    def __init__(self, path: Path, attrs: dict[str, Any], ids: list[str], offsets: np.ndarray,
                 missing: dict[str, str]) -> None:
        self.path = path
        self.attrs = attrs
        self.ids = ids
        self.missing = missing  # audio_id -> reason, for ids of the split that have no features
        self._offsets = offsets
        self._index = {audio_id: i for i, audio_id in enumerate(ids)}
        self._file: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, audio_id: object) -> bool:
        return audio_id in self._index

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, {len(self)} clips, encoder={self.attrs['encoder']!r}, "
                f"frame_dim={self.attrs['frame_dim']}, dtype={self.attrs['dtype']})")

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # a handle inherited through fork must not be used; h5py handles are not fork-safe
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _row(self, audio_id: str) -> int:
        try:
            return self._index[audio_id]
        except KeyError:
            why = f" (missing: {self.missing[audio_id]})" if audio_id in self.missing else ""
            raise KeyError(f"{self.path}: no features for audio id {audio_id!r}{why}") from None

    def num_frames(self, audio_id: str) -> int:
        """T of ``audio_id``, without reading its features."""
        i = self._row(audio_id)
        return int(self._offsets[i + 1] - self._offsets[i])

    def frames(self, audio_id: str) -> np.ndarray:
        """Frame features of ``audio_id``: [T, frame_dim] in the store's dtype."""
        i = self._row(audio_id)
        return self._finite(audio_id, self._h5()["frames"][self._offsets[i]:self._offsets[i + 1]])

    def clip(self, audio_id: str) -> np.ndarray:
        """Clip embedding of ``audio_id``: [clip_dim] in the store's dtype."""
        return self._finite(audio_id, self._h5()["clips"][self._row(audio_id)])

    def _finite(self, audio_id: str, values: np.ndarray) -> np.ndarray:
        # the project never writes one, so a NaN or inf was put there by something else: refuse the store
        if not np.isfinite(values).all():
            raise ValueError(f"{self.path}: {audio_id!r}: {NON_FINITE}; not a store this project wrote as it is")
        return values

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, -1  # each process opens its own handle
        return state

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a project store, as plain values; ValueError for anything else (no completeness check)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: feature store not found")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
    except OSError as err:  # h5py's error for truncated, corrupt and non-HDF5 files
        raise ValueError(f"{path}: not a readable HDF5 file, corrupt or truncated ({err})") from None
    if attrs.get("format") != STORE_FORMAT:
        raise ValueError(f"{path}: not a feature store of this project (attribute 'format' is "
                         f"{attrs.get('format')!r}, expected {STORE_FORMAT!r})")
    absent = [k for k in REQUIRED_ATTRS if k not in attrs]
    if absent:
        raise ValueError(f"{path}: feature store lacks attributes {absent}")
    return attrs


def check_attrs(path: str | os.PathLike, attrs: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """Raise ValueError naming every attribute of ``expect`` that ``attrs`` does not match (expected vs found)."""
    diffs = [f"{key}: expected {value!r}, found {attrs.get(key, '<absent>')!r}"
             for key, value in expect.items() if not _same(value, attrs.get(key, "<absent>"))]
    if diffs:
        raise ValueError(f"{path}: feature store was made differently than expected; " + "; ".join(diffs))


def open_store(path: str | os.PathLike, expect: Mapping[str, Any] | None = None) -> FeatureStore:
    """Open a finished store for reading, after checking it.

    Raises ValueError naming the file when it is missing, not HDF5, truncated or corrupt, not a store of this
    project, not ``complete``, or when an attribute differs from ``expect`` (e.g. ``{"encoder": "cnn14",
    "checkpoint_sha256": ...}``; a dict value is compared with the JSON attribute it names).
    """
    path = Path(path)
    attrs = read_attrs(path)
    if attrs["complete"] is not True:
        raise ValueError(f"{path}: feature store is incomplete (extraction was interrupted or is still running); "
                         "run the extraction command again to finish it")
    check_attrs(path, attrs, expect or {})
    try:
        with h5py.File(path, "r") as f:
            ids = [s.decode("utf-8") for s in f["audio_ids"][()]]
            offsets = f["offsets"][()].astype(np.int64)
            missing = dict(zip((s.decode("utf-8") for s in f["missing_ids"][()]),
                               (s.decode("utf-8") for s in f["missing_reasons"][()])))
            shapes = f["frames"].shape, f["clips"].shape
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: feature store is corrupt ({err})") from None
    if len(offsets) != len(ids) + 1 or shapes[0][0] != offsets[-1] or shapes[1][0] != len(ids):
        raise ValueError(f"{path}: feature store is corrupt (audio_ids {len(ids)}, offsets {len(offsets)}, "
                         f"frames {shapes[0]}, clips {shapes[1]} disagree)")
    return FeatureStore(path, attrs, ids, offsets, missing)


# ---- writing --------------------------------------------------------------------------------------------------
class StoreWriter:
    """Writes one store whose ids and frame counts are known up front, clips in any order, then commits it.

    Made by :func:`create_store`. Everything goes to ``.<name>.tmp<pid>`` beside it; :meth:`commit` checks every id was
    written, marks the file complete and renames it onto ``path``. :meth:`abort` (or leaving the ``with`` block without
    a commit) deletes the temporary file. The free space the store needs is checked before it is begun, and a full
    disk on the way is reported naming the device (``common.io``'s rule for outputs).
    """

    def __init__(self, path: Path, attrs: Mapping[str, Any], ids: Sequence[str], num_frames: Sequence[int],
                 missing: Mapping[str, str]) -> None:
        self.path = path
        self.tmp = temp_path(path)  # h5py writes by file name: common.io's rule for outputs, step by step
        dtype = attrs["dtype"]
        self._offsets = np.concatenate([[0], np.cumsum(np.asarray(num_frames, dtype=np.int64))]).astype(np.int64)
        self._index = {audio_id: i for i, audio_id in enumerate(ids)}
        self._written = np.zeros(len(ids), dtype=bool)
        need = (int(self._offsets[-1]) * attrs["frame_dim"] + len(ids) * attrs["clip_dim"]) * np.dtype(dtype).itemsize
        remove_stale_temps(path.parent, glob.escape(path.name))
        check_free_space(path.parent, need, path.name)
        self._file = None
        with self._failing():
            self._file = h5py.File(self.tmp, "w", libver="earliest", track_order=True)
            self._create(ids, missing, attrs)

    def _create(self, ids: Sequence[str], missing: Mapping[str, str], attrs: Mapping[str, Any]) -> None:
        dtype = attrs["dtype"]
        f = self._file
        # no timestamps: the same features give the same bytes
        f.create_dataset("audio_ids", data=np.array(list(ids), dtype=object), dtype=_STR, track_times=False)
        f.create_dataset("offsets", data=self._offsets, track_times=False)
        f.create_dataset("missing_ids", data=np.array(list(missing), dtype=object), dtype=_STR, track_times=False)
        f.create_dataset("missing_reasons", data=np.array(list(missing.values()), dtype=object), dtype=_STR,
                         track_times=False)
        self._frames = f.create_dataset("frames", shape=(int(self._offsets[-1]), attrs["frame_dim"]), dtype=dtype,
                                        track_times=False, fillvalue=0)
        self._clips = f.create_dataset("clips", shape=(len(ids), attrs["clip_dim"]), dtype=dtype, track_times=False,
                                       fillvalue=0)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["complete"] = False

    def put(self, audio_id: str, frames: np.ndarray, clip: np.ndarray) -> None:
        """Write ``frames`` [T, frame_dim] and ``clip`` [clip_dim] of ``audio_id`` (T as declared, finite values in
        the store's dtype)."""
        i = self._index[audio_id]
        start, end = self._offsets[i], self._offsets[i + 1]
        if frames.shape != (end - start, self._frames.shape[1]) or clip.shape != (self._clips.shape[1],):
            raise ValueError(f"{audio_id!r}: frames {frames.shape} / clip {clip.shape} do not match the declared "
                             f"({end - start}, {self._frames.shape[1]}) / ({self._clips.shape[1]},)")
        with np.errstate(over="ignore"):  # an overflow to inf is refused just below
            frames, clip = frames.astype(self._frames.dtype, copy=False), clip.astype(self._clips.dtype, copy=False)
        if not (np.isfinite(frames).all() and np.isfinite(clip).all()):
            raise ValueError(f"{self.path}: {audio_id!r}: {NON_FINITE}")
        with self._failing():
            self._frames[start:end] = frames
            self._clips[i] = clip
        self._written[i] = True

    def commit(self) -> Path:
        """Mark the store complete and move it to its final path; ValueError if any id was not written."""
        if not self._written.all():
            absent = [audio_id for audio_id, i in self._index.items() if not self._written[i]]
            self.abort()
            raise ValueError(f"{self.path}: {len(absent)} ids were never written, e.g. {absent[:3]}")
        with self._failing():
            self._file.attrs["complete"] = True
            self._file.close()
            put_in_place(self.tmp, self.path)
        return self.path

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """On any error: the temporary file closed and removed, a full disk named (h5py says it in its own words)."""
        try:
            yield
        except BaseException as err:
            self._close()
            raise output_failed(err, self.tmp, self.path) from err

    def _close(self) -> None:
        if self._file is not None and self._file.id.valid:
            with contextlib.suppress(Exception):  # closing flushes, which fails again on a full disk
                self._file.close()

    def abort(self) -> None:
        self._close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # after commit there is nothing left to remove


def create_store(path: str | os.PathLike, attrs: Mapping[str, Any], ids: Sequence[str],
                 num_frames: Sequence[int], missing: Mapping[str, str] | None = None) -> StoreWriter:
    """Start writing the store at ``path``.

    Args:
        attrs: what made the features: every key of :data:`REQUIRED_ATTRS` but ``format`` and ``complete`` (set
            here), plus anything else worth recording. ``encoder_spec`` may be a dict (stored as JSON).
        ids: audio ids with features, in the order readers list them (unique, any characters).
        num_frames: T of each id, same order.
        missing: ids of the split without features -> reason.
    """
    path = Path(path)
    attrs = dict(attrs)
    if isinstance(attrs.get("encoder_spec"), Mapping):
        attrs["encoder_spec"] = json.dumps(attrs["encoder_spec"], sort_keys=True)
    attrs["format"] = STORE_FORMAT
    absent = [k for k in REQUIRED_ATTRS if k not in attrs and k != "complete"]
    if absent:
        raise ValueError(f"{path}: store attributes lack {absent}")
    if attrs["dtype"] not in DTYPES:
        raise ValueError(f"Invalid dtype. (expected one of {DTYPES}, found {attrs['dtype']!r})")
    if len(ids) != len(num_frames):
        raise ValueError(f"{path}: {len(ids)} ids but {len(num_frames)} frame counts")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate audio ids")
    missing = dict(missing or {})
    both = set(missing) & set(ids)
    if both:
        raise ValueError(f"{path}: ids both written and missing, e.g. {sorted(both)[:3]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return StoreWriter(path, attrs, list(ids), list(num_frames), missing)
