"""The parts of a feature extraction: its plan, one part file per finished batch, and the store assembled from them.

Layout beside the store ``<out>``::

    <out>.parts/plan.json         {"fingerprint": what makes the features, "ids": manifest order, "batches": [[i, ...]]}
    <out>.parts/part-<b>.npz      batch b: meta (JSON), frames [sum T, D], lengths [B], clips [B, D_clip], errors
    <out>.errors.csv              audio_id,path,reason of the clips that could not be read (written by :func:`merge`)
    <out>.lock, <out>.shard<i>.lock   held while a process writes the store or a shard of it (:class:`StoreLock`)

Every file is written under a temporary name and renamed (``common.io``), so a part is either whole or absent and a
rerun redoes only the absent ones; temporaries left by killed processes are deleted. The fingerprint (encoder, its
arguments, the checkpoint's hash, sample rate, dtype, batch size, the manifest's clips) must agree between the plan,
every part and an existing store: a run made differently is refused rather than mixed. One process at a time writes
a store (or one shard of it): a second one is refused at once (:class:`StoreLock`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from common.io import PickledDataError, atomic_write, read_arrays, remove_stale_temps, write_csv, write_text_atomic
from features.manifest import AudioEntry
from features.store import check_attrs, create_store, read_attrs

PLAN_JSON = "plan.json"
ERRORS_COLUMNS = ("audio_id", "path", "reason")
# What must agree between a store (or its parts) and the run that would finish it.
FINGERPRINT_KEYS = ("encoder", "encoder_spec", "checkpoint_sha256", "encoder_weights_sha256", "sample_rate",
                    "frame_hop", "frame_dim", "clip_dim", "dtype", "batch_size", "manifest_sha256")


def parts_dir_of(out: str | os.PathLike) -> Path:
    """``<out>.parts``: where the parts of the store ``out`` are made."""
    return Path(f"{out}.parts")


def errors_csv_of(out: str | os.PathLike) -> Path:
    """``<out>.errors.csv``: the clips of the store ``out`` that could not be read."""
    return Path(f"{out}.errors.csv")


def part_path(parts_dir: Path, batch: int) -> Path:
    return parts_dir / f"part-{batch:06d}.npz"


def digest(data: Any) -> str:
    """SHA-256 of JSON-able data (key order ignored)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def manifest_digest(audio: Sequence[AudioEntry]) -> str:
    """Hash of the clips (id, path, duration) in manifest order: a changed manifest makes different batches."""
    return digest([[e.audio_id, e.path, round(e.duration, 6)] for e in audio])


def _fingerprint_diff(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    return [f"{k}: this run has {expected.get(k)!r}, found {found.get(k)!r}"
            for k in FINGERPRINT_KEYS if expected.get(k) != found.get(k)]


def open_plan(parts_dir: Path, fingerprint: dict[str, Any], batches: list[list[int]], ids: list[str]) -> None:
    """Create ``plan.json``, or check that the one there was made by this same run (ValueError naming what differs)."""
    plan_path = parts_dir / PLAN_JSON
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        diff = _fingerprint_diff(fingerprint, plan.get("fingerprint", {}))
        if diff:
            raise ValueError(f"{parts_dir}: holds partial features made differently ({'; '.join(diff)}); "
                             "rerun with the same settings, or delete that folder to start over")
        return
    write_text_atomic(plan_path, json.dumps({"fingerprint": fingerprint, "ids": ids, "batches": batches},
                                            ensure_ascii=False, indent=1, sort_keys=True))


# ---- one writer at a time -------------------------------------------------------------------------------------
_HELD: set[int] = set()  # descriptors of the lock files this process holds


def _close_held_in_child() -> None:
    """In a forked child (an audio-reading worker): close the copies of the lock descriptors, without unlocking, so
    the locks stay the parent's alone and go when it dies, even while the child lingers."""
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _try_lock(path: Path, shared: bool) -> int | None:
    """A descriptor holding ``flock`` on ``path`` (created if absent), or None when another process holds it. An
    exclusive holder records its pid in the file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        held = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # its last holder deleted the file between our open and our lock: lock the new one
    _HELD.add(fd)
    try:
        _record_pid(fd, shared)
    except OSError as err:  # a full disk: say which file, as every other write does
        _unlock(fd, path)
        raise OSError(err.errno, err.strerror, str(path)) from None
    return fd


def _record_pid(fd: int, shared: bool) -> None:
    os.ftruncate(fd, 0)  # shared holders are many: no pid (and no stale one)
    if not shared:
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _unlock(fd: int, path: Path) -> None:
    """Release a lock; its last holder deletes the file, so no lock file outlives the run."""
    _HELD.discard(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a failed attempt gives up a shared lock too
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    os.close(fd)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f" (pid {pid})" if pid.isdigit() else ""


class StoreLock:
    """The right to write the store ``out`` and its parts, from ``__enter__`` until released or the process ends.

    ``shard=None`` (an unsharded extraction, :func:`merge`): ``<out>.lock``, exclusively. ``shard=i``: ``<out>.lock``
    shared with the other shards and ``<out>.shard<i>.lock`` exclusively, so the shards of one job run side by side
    but never beside a whole-store writer or a second copy of themselves. Nothing waits: a lock held elsewhere is a
    ValueError naming the store and the holder's pid. Locks are ``flock`` locks, which the kernel releases when their
    process ends, killed or not, so a killed run can be resumed at once; the last holder deletes the lock file.
    """

    def __init__(self, out: str | os.PathLike, shard: int | None = None) -> None:
        self.out, self.shard = Path(out), shard
        self.store_path = Path(f"{out}.lock")
        self.shard_path = None if shard is None else Path(f"{out}.shard{shard}.lock")
        self._store: int | None = None
        self._shard: int | None = None
        self._alone = False  # holds <out>.lock exclusively

    def __enter__(self) -> "StoreLock":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._store = _try_lock(self.store_path, shared=self.shard is not None)
        if self._store is None:
            raise ValueError(f"{self.out}: another extraction{_holder(self.store_path)} is writing it; wait for it "
                             "to finish (or stop it), then run again")
        self._alone = self.shard is None
        if self.shard_path is not None:
            self._shard = _try_lock(self.shard_path, shared=False)
            if self._shard is None:
                self.release()
                raise ValueError(f"{self.out}: another extraction{_holder(self.shard_path)} is writing shard "
                                 f"{self.shard} of it; wait for it to finish (or stop it), then run again")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release_shard(self) -> None:
        """Give up ``<out>.shard<i>.lock`` (this shard's batches are done)."""
        if self._shard is not None:
            _unlock(self._shard, self.shard_path)
            self._shard = None

    def release(self) -> None:
        self.release_shard()
        if self._store is not None:
            _unlock(self._store, self.store_path)
            self._store, self._alone = None, False

    def take_store(self) -> bool:
        """Hold ``<out>.lock`` alone (to assemble or clean up the store): True at once for a whole-store holder; for
        a shard, False when other shards still hold it, and this shard's hold is then given up."""
        if self._alone or self._store is None:
            return self._alone
        try:
            fcntl.flock(self._store, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # the shared lock may already be gone (Linux drops it first): close it
            _HELD.discard(self._store)
            os.close(self._store)
            self._store = None
            return False
        _record_pid(self._store, shared=False)
        self._alone = True
        return True


# ---- part files -----------------------------------------------------------------------------------------------
def write_part(path: Path, meta: dict[str, Any], frames: np.ndarray, lengths: np.ndarray, clips: np.ndarray,
               errors: list[tuple[str, str, str]]) -> None:
    """One finished batch, atomically: ``frames`` [sum T, D] concatenated in the order of ``meta['ids']``,
    ``lengths`` [B] (T of each), ``clips`` [B, D_clip]; ``errors`` lists the batch's unreadable clips
    ``(audio_id, path, reason)``. ``meta`` holds ``fingerprint_sha256``, ``batch``, ``planned`` and ``ids``."""
    with atomic_write(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta, ensure_ascii=False)), frames=frames, lengths=lengths,
                 clips=clips, errors=np.array(json.dumps(errors, ensure_ascii=False)))


def remove_stale_part(parts_dir: Path, batch: int) -> None:
    """Delete temporaries of batch ``batch``'s part left by killed processes."""
    remove_stale_temps(parts_dir, part_path(parts_dir, batch).name)


def _read_arrays(path: Path, *keys: str) -> list[np.ndarray]:
    return read_arrays(path, keys, "a part file holds plain arrays only. Delete it and run the extraction again")


def _read_part_meta(path: Path) -> dict[str, Any] | None:
    """A part's metadata, or None when the file is absent or unreadable (it is then redone); PickledDataError when
    it holds pickled data (not made by an extraction: the user decides what to do with it)."""
    try:
        (meta,) = _read_arrays(path, "meta")
        return json.loads(str(meta))
    except PickledDataError:
        raise
    except (OSError, ValueError, KeyError):
        return None


def part_done(path: Path, fingerprint_sha: str, batch: int, planned: list[str]) -> bool:
    """True when ``path`` is a whole part of this extraction's batch ``batch`` (whose clips are ``planned``), False
    when absent or unreadable; ValueError when it was made by another extraction."""
    meta = _read_part_meta(path)
    if meta is None:
        return False
    if (meta.get("fingerprint_sha256"), meta.get("batch"), meta.get("planned")) != (fingerprint_sha, batch, planned):
        raise ValueError(f"{path}: part made by a different extraction (encoder, checkpoint, settings or manifest); "
                         f"delete {path.parent} to start over")
    return True


def _iter_part(path: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(audio_id, frames [T, D], clip [D_clip]) of every clip of one part."""
    meta, frames, lengths, clips = _read_arrays(path, "meta", "frames", "lengths", "clips")
    meta = json.loads(str(meta))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for row, audio_id in enumerate(meta["ids"]):
        yield audio_id, frames[offsets[row]:offsets[row + 1]], clips[row]


# ---- assembling the store -------------------------------------------------------------------------------------
def merge(out: str | os.PathLike, *parts_dirs: str | os.PathLike, keep_parts: bool = False) -> Path:
    """Assemble the store ``out`` from finished parts, in manifest order, and delete ``<out>.parts``.

    Args:
        out: the store to write; an existing one made differently is refused, and so is one that another process
            is writing (extraction or merge: ValueError at once).
        parts_dirs: folders holding parts (default ``<out>.parts``); several, e.g. one per machine, are searched in
            turn. ValueError if a batch has no part in any of them.
        keep_parts: keep ``<out>.parts`` after assembling.
    """
    with StoreLock(out):
        return assemble(out, *parts_dirs, keep_parts=keep_parts)


def assemble(out: str | os.PathLike, *parts_dirs: str | os.PathLike, keep_parts: bool = False) -> Path:
    """:func:`merge` for a caller already holding the store's :class:`StoreLock` alone."""
    out_path = Path(out)
    dirs = [Path(d) for d in parts_dirs] or [parts_dir_of(out_path)]
    plans = []
    for d in dirs:
        if not (d / PLAN_JSON).is_file():
            raise ValueError(f"{d}: not a parts folder of a feature extraction (no {PLAN_JSON})")
        plans.append(json.loads((d / PLAN_JSON).read_text(encoding="utf-8")))
    plan = plans[0]
    for d, other in zip(dirs[1:], plans[1:]):
        diff = _fingerprint_diff(plan["fingerprint"], other["fingerprint"])
        if diff:
            raise ValueError(f"{d}: parts made differently from {dirs[0]} ({'; '.join(diff)})")
    fingerprint, ids, batches = plan["fingerprint"], plan["ids"], plan["batches"]
    fp_sha = digest(fingerprint)
    if out_path.exists():
        check_attrs(out_path, read_attrs(out_path), fingerprint)

    part_paths = []
    for b, members in enumerate(batches):
        for d in dirs:
            path = part_path(d, b)
            if path.is_file() and part_done(path, fp_sha, b, [ids[i] for i in members]):
                part_paths.append(path)
                break
        else:
            raise ValueError(f"{out_path}: batch {b} has no finished part in {', '.join(map(str, dirs))}; "
                             "run the extraction (all shards) again first")
    lengths: dict[str, int] = {}
    errors: dict[str, tuple[str, str]] = {}
    for path in part_paths:
        meta, n, errs = _read_arrays(path, "meta", "lengths", "errors")
        meta, errs = json.loads(str(meta)), json.loads(str(errs))
        lengths.update(zip(meta["ids"], (int(x) for x in n)))
        errors.update({audio_id: (p, reason) for audio_id, p, reason in errs})
    written = [i for i in ids if i in lengths]  # manifest order
    missing = {i: errors[i][1] for i in ids if i in errors}

    # parts planned before stores recorded their encoder's weights merge without that record (re-ranking refuses them)
    attrs = {k: fingerprint[k] for k in FINGERPRINT_KEYS if k in fingerprint}
    attrs["num_clips"], attrs["num_missing"] = len(written), len(missing)
    errors_csv = errors_csv_of(out_path)
    write_csv(errors_csv, ERRORS_COLUMNS, [(i, *errors[i]) for i in ids if i in errors])
    with create_store(out_path, attrs, written, [lengths[i] for i in written], missing) as writer:
        for path in part_paths:
            for audio_id, frames, clip in _iter_part(path):
                writer.put(audio_id, frames, clip)
        writer.commit()
    if not keep_parts:  # only our own folder: folders named on the command line are the user's to delete
        shutil.rmtree(parts_dir_of(out_path), ignore_errors=True)
    print(f"{out_path}: {len(written)} clips written, {len(missing)} missing"
          + (f" (see {errors_csv})" if missing else ""), file=sys.stderr)
    return out_path
