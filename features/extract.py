"""Feature extraction: a frozen audio encoder turns one manifest split into one HDF5 feature store.

    python -m features.extract --manifest data/clotho/evaluation --checkpoint exp/retrieval/audio_encoder.pt \
        --out features/evaluation.h5 [--batch-size 8] [--chunk-seconds 10] [--dtype float32] [--workers 1]
    python -m features.extract merge --out features/evaluation.h5 [PARTS_DIR ...]

How it survives being killed at any moment. The clips are planned into batches once
(``features.encode.plan_batches``: longest first, ties in manifest order), so a batch holds clips of about the same
length (little padding) and the same command always makes the same batches. Each finished batch becomes one part
file ``<out>.parts/part-<b>.npz``, written atomically, so a part is either whole or absent. A rerun skips the parts
present. When every part exists they are assembled, in manifest order, into ``<out>``; only then are the parts
deleted. ``<out>.parts/plan.json`` records what makes the features; a rerun that differs is refused rather than
mixed, and so is an existing store made differently (``features.parts`` owns these files and the assembly).

Sharding: ``--num-shards K --shard-id I`` (or ``torchrun``, which sets RANK and WORLD_SIZE) makes a process do the
batches ``b % K == I``. The shards share the parts folder and batches do not depend on K, so the result equals an
unsharded run. The last shard to finish assembles the store (rank 0 after a barrier under ``torchrun``); ``merge``
assembles it by hand, e.g. from parts folders made on several machines.

One writer at a time: an unsharded run and ``merge`` hold ``<out>.lock``, a shard holds ``<out>.shard<I>.lock`` (and
shares ``<out>.lock`` with the other shards), so a second process writing the same store, or the same shard of it, is
refused at once with a one-line error (``features.parts.StoreLock``). The locks go with their process, killed or
not: a killed run can be resumed at once.

Clips shorter than ``features.audio.MIN_SECONDS`` (0.1 s: clicks, drum hits) are zero-padded at their end to that
length. Bad clips (empty, unreadable, non-finite, ...) are printed with their reason, skipped, listed in
``<out>.errors.csv`` (``audio_id,path,reason``) and in the store's ``missing_ids``/``missing_reasons``.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

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

from common.cli import run
from common.device import resolve_device
from features.audio import AudioError, load_audio
from features.encode import encode_waveforms, plan_batches
from features.manifest import AudioEntry, read_manifest
from features.parts import (StoreLock, assemble, digest, manifest_digest, merge, open_plan, part_done, part_path,
                            parts_dir_of, remove_stale_part, write_part)
from features.store import DTYPES, NON_FINITE, check_attrs, read_attrs
from features.weights import CHUNK_SECONDS, checkpoint_sha256, load_audio_encoder, weights_sha256


# ---- reading audio in the background --------------------------------------------------------------------------
class BatchAudio(Dataset):
    """Item k: the clips of planned batch ``batches[k]``, read and resampled (short ones padded, ``load_audio``).

    Returns ``{"batch": b, "ids": [...], "waves": [(N_i,) float32 tensor, ...], "errors": [(audio_id, path,
    reason), ...]}``; clips that fail to load are in ``errors`` only.
    """

    def __init__(self, audio: Sequence[AudioEntry], batches: Sequence[tuple[int, list[int]]],
                 sample_rate: int) -> None:
        self.audio, self.batches, self.sample_rate = audio, list(batches), sample_rate

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, Any]:
        b, members = self.batches[k]
        ids, waves, errors = [], [], []
        for i in members:
            entry = self.audio[i]
            try:  # tensors, not arrays: a worker hands them over in shared memory
                waves.append(torch.from_numpy(load_audio(entry.path, self.sample_rate)))
                ids.append(entry.audio_id)
            except AudioError as err:
                errors.append((entry.audio_id, entry.path, err.reason))
        return {"batch": b, "ids": ids, "waves": waves, "errors": errors}


def _as_is(item: Any) -> Any:
    return item


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # the main process's encoder needs the cores; decoding is single-threaded anyway


# ---- the command ----------------------------------------------------------------------------------------------
def _resolve_shard(num_shards: int | None, shard_id: int | None) -> tuple[int, int, bool]:
    """(num_shards, shard_id, launched_by_torchrun)."""
    if num_shards is None and shard_id is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), True
    num_shards, shard_id = num_shards or 1, shard_id or 0
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"Invalid shard. (expected 0 <= shard_id < num_shards, found {shard_id} of {num_shards})")
    return num_shards, shard_id, False


def extract(manifest: str, checkpoint: str, out: str, encoder: str | None = None,
            encoder_args: dict[str, Any] | None = None, batch_size: int = 8,
            chunk_seconds: float | None = CHUNK_SECONDS, dtype: str = "float32", num_shards: int | None = None,
            shard_id: int | None = None, workers: int = 1, device: str = "auto", progress: bool = True
            ) -> Path | None:
    """Extract frame features and clip embeddings of a manifest split into an HDF5 store.

    Also: ``python -m features.extract merge --out STORE.h5 [PARTS_DIR ...]`` assembles a store from finished parts.
    Clips shorter than 0.1 s (``features.audio.MIN_SECONDS``) are zero-padded at their end to 0.1 s; empty,
    unreadable or non-finite ones are reported and skipped. A second process writing the same store (or the same
    shard) is refused at once.

    Args:
        manifest: split folder (``wav.csv``, ``captions.json``).
        checkpoint: an audio-encoder checkpoint (``audio_encoder.pt``, written by ``retrieval.train`` beside
            ``best.pt``, or by ``features.weights.save_audio_encoder``) or an official PANNs ``{"model": ...}`` one.
            A retrieval checkpoint (``best.pt``) is refused: pass the ``audio_encoder.pt`` beside it.
        out: the store to write (``.h5``); ``<out>.parts/``, ``<out>.errors.csv`` and, while running, lock files
            ``<out>.lock``/``<out>.shard<I>.lock`` go beside it.
        encoder: registered encoder name; needed for official PANNs checkpoints only.
        encoder_args: extra encoder arguments (e.g. ``{"width": 0.25, "sample_rate": 16000}``).
        batch_size: clips per encoder forward (clips of similar length are batched together).
        chunk_seconds: PANNs CNNs run clips longer than this in windows of about this length (frames
            concatenated, so memory stays bounded); 0 or None runs whole clips.
        dtype: float16 or float32 storage.
        num_shards, shard_id: do one shard of the batches (default: from torchrun's WORLD_SIZE/RANK, else all).
        workers: background processes reading audio (0 reads in this process).
        device: where the encoder runs: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N. The features agree with the CPU's within float rounding; the store does not depend on it.
        progress: show a progress bar.

    Returns:
        the store's path when this call finished it (or found it done), None when other shards still work.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Invalid dtype. (expected one of {DTYPES}, found {dtype!r})")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"Invalid batch_size. (expected a positive integer, found {batch_size!r})")
    if "chunk_seconds" in (encoder_args or {}):
        raise ValueError("Invalid encoder_args. (give the window for long audio as chunk_seconds, not in encoder_args)")
    num_shards, shard_id, torchrun = _resolve_shard(num_shards, shard_id)
    where = resolve_device(device)
    out_path, ckpt_path = Path(out), Path(checkpoint)
    split = read_manifest(manifest)
    with StoreLock(out_path, shard=shard_id if num_shards > 1 else None) as lock:  # before any work or write
        with ThreadPoolExecutor(1) as pool:  # hash the checkpoint while it loads (hashlib releases the GIL)
            checkpoint_hash = pool.submit(checkpoint_sha256, ckpt_path)
            model = load_audio_encoder(ckpt_path, encoder, chunk_seconds=chunk_seconds, **(encoder_args or {}))
        model.eval().requires_grad_(False).to(where)
        spec = model.spec
        fingerprint = {"encoder": spec["name"], "encoder_spec": json.dumps(spec, sort_keys=True),
                       "checkpoint_sha256": checkpoint_hash.result(),
                       "encoder_weights_sha256": weights_sha256(model.state_dict()), "sample_rate": int(model.sample_rate),
                       "frame_hop": int(model.frame_hop), "frame_dim": int(model.frame_dim),
                       "clip_dim": int(model.clip_dim), "dtype": dtype, "batch_size": int(batch_size),
                       "manifest_sha256": manifest_digest(split.audio)}
        parts_dir = parts_dir_of(out_path)

        if _complete(out_path, fingerprint):  # done before
            if lock.take_store():
                shutil.rmtree(parts_dir, ignore_errors=True)  # a kill after the final rename can leave them
            print(f"{out_path}: already complete ({len(split)} clips), nothing to do", file=sys.stderr)
            return out_path

        ids = split.ids
        batches = plan_batches([e.duration for e in split.audio], int(batch_size))
        if not torchrun or shard_id == 0:
            open_plan(parts_dir, fingerprint, batches, ids)
        if torchrun:
            from common.distributed import barrier, init_distributed
            init_distributed()
            barrier()  # rank 0 has written or checked the plan
            open_plan(parts_dir, fingerprint, batches, ids)
        fp_sha = digest(fingerprint)

        mine = [b for b in range(len(batches)) if b % num_shards == shard_id]
        for b in mine:
            remove_stale_part(parts_dir, b)
        todo = [(b, batches[b]) for b in mine
                if not part_done(part_path(parts_dir, b), fp_sha, b, [ids[i] for i in batches[b]])]
        done_clips = sum(len(batches[b]) for b in mine) - sum(len(m) for _, m in todo)
        bar = tqdm(total=sum(len(batches[b]) for b in mine), initial=done_clips, unit="clip", disable=not progress,
                   desc=f"extract {out_path.name}" + (f" shard {shard_id}/{num_shards}" if num_shards > 1 else ""))
        with torch.inference_mode():
            for item, frames, lengths, clips in _encoded(model, split.audio, todo, workers, dtype):
                for audio_id, path, reason in item["errors"]:
                    bar.write(f"skipping {audio_id!r}: {path}: {reason}")
                b = item["batch"]
                meta = {"fingerprint_sha256": fp_sha, "batch": b, "planned": [ids[i] for i in batches[b]],
                        "ids": item["ids"]}
                write_part(part_path(parts_dir, b), meta, frames, lengths, clips, item["errors"])
                bar.update(len(batches[b]))
        bar.close()

        lock.release_shard()
        if torchrun:
            from common.distributed import barrier
            if shard_id != 0:
                lock.release()  # so that rank 0 holds the store alone after the barrier
            barrier()  # every shard's parts are on disk
            if shard_id != 0:
                return None
        if not lock.take_store():
            print(f"{out_path}: shard {shard_id}/{num_shards} done; other shards are still running (the last one "
                  "to finish assembles the store)", file=sys.stderr)
            return None
        if _complete(out_path, fingerprint):  # another shard assembled it while this one finished
            return out_path
        absent = [b for b in range(len(batches)) if not part_path(parts_dir, b).is_file()]
        if absent:
            shards = sorted({b % num_shards for b in absent})
            print(f"{out_path}: shard {shard_id}/{num_shards} done; {len(absent)} batches are missing and no other "
                  f"shard is running: run shard(s) {', '.join(map(str, shards))} of {num_shards} (or the merge "
                  "command, given parts made elsewhere)", file=sys.stderr)
            return None
        return assemble(out_path, parts_dir)


def _complete(out_path: Path, fingerprint: dict[str, Any]) -> bool:
    """True when ``out_path`` is a finished store made this way; ValueError when made differently (never
    overwritten)."""
    if not out_path.exists():
        return False
    attrs = read_attrs(out_path)
    check_attrs(out_path, attrs, fingerprint)
    return attrs["complete"] is True


def _encoded(model: torch.nn.Module, audio: Sequence[AudioEntry], todo: list[tuple[int, list[int]]], workers: int,
             dtype: str) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]]:
    """Encode the planned batches ``todo`` (``(b, clip indices)``), audio read by ``workers`` processes: yields
    each ``BatchAudio`` item with ``frames`` [sum T, D] (in the order of ``item["ids"]``), ``lengths`` [B] and
    ``clips`` [B, D_clip] as ``dtype``. Call under ``torch.inference_mode()``."""
    loader = DataLoader(BatchAudio(audio, todo, model.sample_rate), batch_size=None, shuffle=False,
                        num_workers=workers, collate_fn=_as_is, worker_init_fn=_one_thread if workers > 0 else None,
                        prefetch_factor=2 if workers > 0 else None, persistent_workers=False)
    np_dtype = np.dtype(dtype)
    paths = {entry.audio_id: entry.path for entry in audio}
    for item in loader:
        rows, lengths, clips = [], np.zeros(0, np.int64), np.zeros((0, model.clip_dim), np_dtype)
        if item["ids"]:
            result = encode_waveforms(model, item["waves"])
            lengths = result["frame_lengths"].numpy().astype(np.int64)
            with np.errstate(over="ignore"):  # an overflow to inf is caught just below
                rows = [result["frames"][row, :n].numpy().astype(np_dtype) for row, n in enumerate(lengths)]  # (T, D)
                clips = result["clip"].numpy().astype(np_dtype)  # (B, D_clip)
            # never store a NaN or inf (a float16 store overflows past 65504): such a clip is reported as missing
            finite = [bool(np.isfinite(f).all() and np.isfinite(c).all()) for f, c in zip(rows, clips)]
            if not all(finite):
                item = {**item, "ids": [i for i, ok in zip(item["ids"], finite) if ok],
                        "errors": item["errors"] + [(i, paths[i], f"the encoder gave {NON_FINITE}")
                                                    for i, ok in zip(item["ids"], finite) if not ok]}
                rows, lengths, clips = ([r for r, ok in zip(rows, finite) if ok], lengths[finite], clips[finite])
        frames = np.concatenate(rows) if rows else np.zeros((0, model.frame_dim), np_dtype)
        yield item, frames, lengths, clips


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "merge":
        run(merge, "features.extract merge", argv=argv[1:])
    else:
        run(extract, "features.extract", argv=argv)


if __name__ == "__main__":
    main()
