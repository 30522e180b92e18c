"""Feature extraction: a frozen audio encoder turns one manifest split into one HDF5 feature store.

    python -m features.extract --manifest data/clotho/evaluation --checkpoint exp/retrieval/best.pt \
        --out features/evaluation.h5 [--batch-size 8] [--chunk-seconds 10] [--dtype float32] [--workers 1]
    python -m features.extract merge --out features/evaluation.h5 [PARTS_DIR ...]

How it survives being killed at any moment. The clips are planned into batches once (longest first, ties in
manifest order), so a batch holds clips of about the same length (little padding) and the same command always
makes the same batches. Each finished batch becomes one part file ``<out>.parts/part-<b>.npz``, written to a
temporary name and renamed, so a part is either whole or absent. A rerun skips the parts present. When every part
exists they are assembled, in manifest order, into ``<out>.tmp<pid>`` and renamed onto ``<out>``; only then are the
parts deleted. ``<out>.parts/plan.json`` records what makes the features (encoder, its arguments, the checkpoint's
hash, sample rate, dtype, batch size, the manifest's clips); a rerun that differs in any of them is refused rather
than mixed, and so is an existing store made differently.

Sharding: ``--num-shards K --shard-id I`` (or ``torchrun``, which sets RANK and WORLD_SIZE) makes a process do the
batches ``b % K == I``. The shards share the parts folder and batches do not depend on K, so the result equals an
unsharded run. Whichever shard finds every part present assembles the store (rank 0 after a barrier under
``torchrun``); ``merge`` assembles it by hand, e.g. from parts folders made on several machines.

Bad clips (unreadable, too short, ...) are printed with their reason, skipped, listed in ``<out>.errors.csv``
(``audio_id,path,reason``) and in the store's ``missing_ids``/``missing_reasons``.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from features.audio import AudioError, load_audio
from features.encoders import AUDIO_ENCODERS
from features.frontend import pad_waveforms
from features.manifest import AudioEntry, read_manifest, write_csv
from features.store import DTYPES, check_attrs, create_store, read_attrs
from features.weights import checkpoint_sha256, load_audio_encoder

PLAN_JSON = "plan.json"
ERRORS_COLUMNS = ("audio_id", "path", "reason")
# What must agree between a store (or its parts) and the run that would finish it.
FINGERPRINT_KEYS = ("encoder", "encoder_spec", "checkpoint_sha256", "sample_rate", "frame_hop", "frame_dim",
                    "clip_dim", "dtype", "batch_size", "manifest_sha256")


def parts_dir_of(out: str | os.PathLike) -> Path:
    return Path(f"{out}.parts")


def errors_csv_of(out: str | os.PathLike) -> Path:
    return Path(f"{out}.errors.csv")


def _part_path(parts_dir: Path, batch: int) -> Path:
    return parts_dir / f"part-{batch:06d}.npz"


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmps(folder: Path, prefix: str) -> None:
    """Delete ``<prefix>.tmp<pid>`` files left by killed processes (a live pid may still be writing its own)."""
    for tmp in folder.glob(f"{prefix}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
            tmp.unlink(missing_ok=True)


# ---- planning -------------------------------------------------------------------------------------------------
def plan_batches(audio: Sequence[AudioEntry], batch_size: int) -> list[list[int]]:
    """Manifest indices in batches of ``batch_size``, longest clips first (ties in manifest order)."""
    order = sorted(range(len(audio)), key=lambda i: (-audio[i].duration, i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def manifest_digest(audio: Sequence[AudioEntry]) -> str:
    """Hash of the clips (id, path, duration) in manifest order: a changed manifest makes different batches."""
    return _digest([[e.audio_id, e.path, round(e.duration, 6)] for e in audio])


def _fingerprint_diff(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    return [f"{k}: this run has {expected.get(k)!r}, found {found.get(k)!r}"
            for k in FINGERPRINT_KEYS if expected.get(k) != found.get(k)]


def _open_plan(parts_dir: Path, fingerprint: dict[str, Any], batches: list[list[int]], ids: list[str]) -> None:
    """Create ``plan.json``, or check that the one there was made by this same run."""
    plan_path = parts_dir / PLAN_JSON
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        diff = _fingerprint_diff(fingerprint, plan.get("fingerprint", {}))
        if diff:
            raise ValueError(f"{parts_dir}: holds partial features made differently ({'; '.join(diff)}); "
                             "rerun with the same settings, or delete that folder to start over")
        return
    parts_dir.mkdir(parents=True, exist_ok=True)
    _atomic_json(plan_path, {"fingerprint": fingerprint, "ids": ids, "batches": batches})


# ---- reading audio in the background --------------------------------------------------------------------------
class BatchAudio(Dataset):
    """Item k: the clips of planned batch ``batches[k]``, read, resampled and zero-padded.

    Returns ``{"batch": b, "ids": [...], "waveform": (B, N) float32 | None, "lengths": (B,) long, "errors":
    [(audio_id, path, reason), ...]}``; clips that fail to load are in ``errors`` only.
    """

    def __init__(self, audio: Sequence[AudioEntry], batches: Sequence[tuple[int, list[int]]], sample_rate: int,
                 min_duration: float) -> None:
        self.audio, self.batches = audio, list(batches)
        self.sample_rate, self.min_duration = sample_rate, min_duration

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, Any]:
        b, members = self.batches[k]
        ids, waves, errors = [], [], []
        for i in members:
            entry = self.audio[i]
            try:
                waves.append(load_audio(entry.path, self.sample_rate, min_duration=self.min_duration))
                ids.append(entry.audio_id)
            except AudioError as err:
                errors.append((entry.audio_id, entry.path, err.reason))
        waveform, lengths = pad_waveforms(waves) if waves else (None, torch.zeros(0, dtype=torch.long))
        return {"batch": b, "ids": ids, "waveform": waveform, "lengths": lengths, "errors": errors}


def _as_is(item: Any) -> Any:
    return item


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # the main process's encoder needs the cores; decoding is single-threaded anyway


# ---- parts ----------------------------------------------------------------------------------------------------
def _write_part(path: Path, meta: dict[str, Any], frames: np.ndarray, lengths: np.ndarray, clips: np.ndarray,
                errors: list[tuple[str, str, str]]) -> None:
    """One finished batch, atomically: frames [sum T, D] concatenated in the order of ``meta['ids']``."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta, ensure_ascii=False)), frames=frames, lengths=lengths,
                 clips=clips, errors=np.array(json.dumps(errors, ensure_ascii=False)))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_part_meta(path: Path) -> dict[str, Any] | None:
    """A part's metadata, or None when the file is absent or unreadable (it is then redone)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def _part_ok(path: Path, fingerprint_sha: str, batch: int, planned: list[str]) -> bool:
    meta = _read_part_meta(path)
    if meta is None:
        return False
    if meta.get("fingerprint_sha256") != fingerprint_sha or meta.get("batch") != batch or meta.get("planned") != planned:
        raise ValueError(f"{path}: part made by a different extraction (encoder, checkpoint, settings or manifest); "
                         f"delete {path.parent} to start over")
    return True


# ---- the command ----------------------------------------------------------------------------------------------
def _resolve_shard(num_shards: int | None, shard_id: int | None) -> tuple[int, int, bool]:
    """(num_shards, shard_id, launched_by_torchrun)."""
    if num_shards is None and shard_id is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), True
    num_shards, shard_id = num_shards or 1, shard_id or 0
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"Invalid shard. (expected 0 <= shard_id < num_shards, found {shard_id} of {num_shards})")
    return num_shards, shard_id, False


def _saved_encoder_name(checkpoint: Path) -> str | None:
    """The encoder name a project checkpoint records (read memory-mapped: tensors are not loaded)."""
    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        spec = ck["model_args"] if ck.get("kind") == "audio_encoder" else ck["model_args"]["audio_encoder"]
        return spec["name"]
    except Exception:  # any format problem is reported properly by load_audio_encoder
        return None


def _encoder_kwargs(name: str | None, checkpoint: Path, encoder_args: dict[str, Any] | None,
                    chunk_seconds: float | None) -> dict[str, Any]:
    kwargs = dict(encoder_args or {})
    if chunk_seconds:  # PANNs CNNs window long clips themselves; AST always windows at its own input length
        target = name or _saved_encoder_name(checkpoint)
        if target in AUDIO_ENCODERS and "chunk_seconds" in inspect.signature(AUDIO_ENCODERS[target]).parameters:
            kwargs["chunk_seconds"] = float(chunk_seconds)
    return kwargs


def extract(manifest: str, checkpoint: str, out: str, encoder: str | None = None,
            encoder_args: dict[str, Any] | None = None, batch_size: int = 8, chunk_seconds: float | None = 10.0,
            dtype: str = "float32", num_shards: int | None = None, shard_id: int | None = None, workers: int = 1,
            min_duration: float = 0.1, progress: bool = True) -> Path | None:
    """Extract frame features and clip embeddings of a manifest split into an HDF5 store.

    Also: ``python -m features.extract merge --out STORE.h5 [PARTS_DIR ...]`` assembles a store from finished parts.

    Args:
        manifest: split folder (``wav.csv``, ``captions.json``).
        checkpoint: a project audio-encoder or retrieval checkpoint, or an official PANNs ``{"model": ...}`` one.
        out: the store to write (``.h5``); ``<out>.parts/`` and ``<out>.errors.csv`` go beside it.
        encoder: registered encoder name; needed for official PANNs checkpoints only.
        encoder_args: extra encoder arguments (e.g. ``{"width": 0.25, "sample_rate": 16000}``).
        batch_size: clips per encoder forward (clips of similar length are batched together).
        chunk_seconds: PANNs CNNs run clips longer than this in windows of about this length (frames
            concatenated, so memory stays bounded); 0 or None runs whole clips.
        dtype: float16 or float32 storage.
        num_shards, shard_id: do one shard of the batches (default: from torchrun's WORLD_SIZE/RANK, else all).
        workers: background processes reading audio (0 reads in this process).
        min_duration: clips shorter than this (s) are reported and skipped.
        progress: show a progress bar.

    Returns:
        the store's path when this call finished it (or found it done), None when other shards still work.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Invalid dtype. (expected one of {DTYPES}, found {dtype!r})")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"Invalid batch_size. (expected a positive integer, found {batch_size!r})")
    num_shards, shard_id, torchrun = _resolve_shard(num_shards, shard_id)
    out_path, ckpt_path = Path(out), Path(checkpoint)
    split = read_manifest(manifest)
    with ThreadPoolExecutor(1) as pool:  # hash the checkpoint while it loads (hashlib releases the GIL)
        checkpoint_hash = pool.submit(checkpoint_sha256, ckpt_path)
        kwargs = _encoder_kwargs(encoder, ckpt_path, encoder_args, chunk_seconds)
        model = load_audio_encoder(ckpt_path, encoder, **kwargs)
    model.eval().requires_grad_(False)
    spec = model.spec
    fingerprint = {"encoder": spec["name"], "encoder_spec": json.dumps(spec, sort_keys=True),
                   "checkpoint_sha256": checkpoint_hash.result(), "sample_rate": int(model.sample_rate),
                   "frame_hop": int(model.frame_hop), "frame_dim": int(model.frame_dim),
                   "clip_dim": int(model.clip_dim), "dtype": dtype, "batch_size": int(batch_size),
                   "manifest_sha256": manifest_digest(split.audio)}
    parts_dir = parts_dir_of(out_path)

    if out_path.exists():  # done before (or someone else's file): never overwrite what differs
        attrs = read_attrs(out_path)
        check_attrs(out_path, attrs, fingerprint)
        if attrs["complete"] is True:
            shutil.rmtree(parts_dir, ignore_errors=True)  # a kill after the final rename can leave them
            print(f"{out_path}: already complete ({len(split)} clips), nothing to do", file=sys.stderr)
            return out_path

    ids = split.ids
    batches = plan_batches(split.audio, batch_size)
    if not torchrun or shard_id == 0:
        _open_plan(parts_dir, fingerprint, batches, ids)
    if torchrun:
        from common.distributed import barrier, init_distributed
        init_distributed()
        barrier()  # rank 0 has written or checked the plan
        _open_plan(parts_dir, fingerprint, batches, ids)
    fp_sha = _digest(fingerprint)

    mine = [b for b in range(len(batches)) if b % num_shards == shard_id]
    for b in mine:
        _remove_stale_tmps(parts_dir, _part_path(parts_dir, b).name)
    todo = [(b, batches[b]) for b in mine
            if not _part_ok(_part_path(parts_dir, b), fp_sha, b, [ids[i] for i in batches[b]])]
    done_clips = sum(len(batches[b]) for b in mine) - sum(len(m) for _, m in todo)

    loader = DataLoader(BatchAudio(split.audio, todo, model.sample_rate, min_duration), batch_size=None,
                        shuffle=False, num_workers=workers, collate_fn=_as_is,
                        worker_init_fn=_one_thread if workers > 0 else None,
                        prefetch_factor=2 if workers > 0 else None, persistent_workers=False)
    np_dtype = np.dtype(dtype)
    bar = tqdm(total=sum(len(batches[b]) for b in mine), initial=done_clips, unit="clip", disable=not progress,
               desc=f"extract {out_path.name}" + (f" shard {shard_id}/{num_shards}" if num_shards > 1 else ""))
    with torch.inference_mode():
        for item in loader:
            for audio_id, path, reason in item["errors"]:
                bar.write(f"skipping {audio_id!r}: {path}: {reason}")
            frames = np.zeros((0, model.frame_dim), np_dtype)
            lengths = np.zeros(0, np.int64)
            clips = np.zeros((0, model.clip_dim), np_dtype)
            if item["ids"]:
                result = model(item["waveform"], item["lengths"])
                lengths = result["frame_lengths"].numpy().astype(np.int64)
                frames = np.concatenate([result["frames"][row, :n].numpy().astype(np_dtype)  # (T_row, D)
                                         for row, n in enumerate(lengths)])
                clips = result["clip"].numpy().astype(np_dtype)  # (B, D_clip)
            b = item["batch"]
            meta = {"fingerprint_sha256": fp_sha, "batch": b, "planned": [ids[i] for i in batches[b]],
                    "ids": item["ids"]}
            _write_part(_part_path(parts_dir, b), meta, frames, lengths, clips, item["errors"])
            bar.update(len(batches[b]))
    bar.close()

    if torchrun:
        from common.distributed import barrier
        barrier()  # every shard's parts are on disk
        if shard_id != 0:
            return None
    absent = [b for b in range(len(batches)) if not _part_path(parts_dir, b).is_file()]
    if absent:
        print(f"{out_path}: shard {shard_id}/{num_shards} done; {len(absent)} batches of other shards still "
              "missing (the last shard to finish assembles the store, or run the merge command)", file=sys.stderr)
        return None
    return merge(out_path, parts_dir)


def _iter_part(path: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(audio_id, frames [T, D], clip [D_clip]) of every clip of one part."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        frames, lengths, clips = z["frames"], z["lengths"], z["clips"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for row, audio_id in enumerate(meta["ids"]):
        yield audio_id, frames[offsets[row]:offsets[row + 1]], clips[row]


def merge(out: str | os.PathLike, *parts_dirs: str | os.PathLike, keep_parts: bool = False) -> Path:
    """Assemble the store ``out`` from finished parts and delete ``<out>.parts``.

    Args:
        out: the store to write; an existing one made differently is refused.
        parts_dirs: folders holding parts (default ``<out>.parts``); several, e.g. one per machine, are searched in
            turn. ValueError if a batch has no part in any of them.
        keep_parts: keep ``<out>.parts`` after assembling.
    """
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
    fp_sha = _digest(fingerprint)
    if out_path.exists():
        check_attrs(out_path, read_attrs(out_path), fingerprint)

    part_paths = []
    for b, members in enumerate(batches):
        for d in dirs:
            path = _part_path(d, b)
            if path.is_file() and _part_ok(path, fp_sha, b, [ids[i] for i in members]):
                part_paths.append(path)
                break
        else:
            raise ValueError(f"{out_path}: batch {b} has no finished part in {', '.join(map(str, dirs))}; "
                             "run the extraction (all shards) again first")
    lengths: dict[str, int] = {}
    errors: dict[str, tuple[str, str]] = {}
    for path in part_paths:
        with np.load(path, allow_pickle=False) as z:
            meta, n, errs = json.loads(str(z["meta"])), z["lengths"], json.loads(str(z["errors"]))
        lengths.update(zip(meta["ids"], (int(x) for x in n)))
        errors.update({audio_id: (p, reason) for audio_id, p, reason in errs})
    written = [i for i in ids if i in lengths]  # manifest order
    missing = {i: errors[i][1] for i in ids if i in errors}

    attrs = {k: fingerprint[k] for k in FINGERPRINT_KEYS}
    attrs["num_clips"], attrs["num_missing"] = len(written), len(missing)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmps(out_path.parent, out_path.name)
    _remove_stale_tmps(out_path.parent, "." + errors_csv_of(out_path).name)  # write_csv's temporary name
    write_csv(errors_csv_of(out_path), ERRORS_COLUMNS, [(i, *errors[i]) for i in ids if i in errors])
    with create_store(out_path, attrs, written, [lengths[i] for i in written], missing) as writer:
        for path in part_paths:
            for audio_id, frames, clip in _iter_part(path):
                writer.put(audio_id, frames, clip)
        writer.commit()
    if not keep_parts:  # only our own folder: folders named on the command line are the user's to delete
        shutil.rmtree(parts_dir_of(out_path), ignore_errors=True)
    print(f"{out_path}: {len(written)} clips written, {len(missing)} missing"
          + (f" (see {errors_csv_of(out_path)})" if missing else ""), file=sys.stderr)
    return out_path


def main(argv: list[str] | None = None) -> None:
    import fire

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "merge":
        fire.Fire(merge, command=argv[1:], name="merge")
    else:
        fire.Fire(extract, command=argv, name="features.extract")


if __name__ == "__main__":
    main()
