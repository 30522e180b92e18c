"""Feature extraction on Clotho-mini clips: one entry per clip, bad clips skipped, resumable after SIGKILL,
shardable; only audio-encoder checkpoints are read. On a small generated split: short clips padded, one writer
per store (or shard) at a time."""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from features.audio import min_samples, probe
from features.encoders import build_audio_encoder
from features.encode import plan_batches
from features.extract import extract
from features.manifest import AudioEntry, Manifest, write_manifest
from features.parts import StoreLock, errors_csv_of, merge, parts_dir_of
from features.store import open_store
from features.weights import checkpoint_sha256, save_audio_encoder

REPO = Path(__file__).resolve().parents[2]
# the three shortest clips of clotho_mini (15-30 s) get these awkward ids, shortest first
AWKWARD_IDS = ("bazaar, Tenerife/2", "pages ü 1", "bunker \"original\"")
BAD_ID = "bad clip, text"
SETTINGS = dict(batch_size=1, chunk_seconds=10.0, dtype="float32")


def _encoder_ckpt(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_audio_encoder(build_audio_encoder("cnn14", width=0.25, sample_rate=16000), path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory, clotho_mini: Path) -> dict:
    root = tmp_path_factory.mktemp("extract")
    infos = sorted((probe(p, scan=False) for p in (clotho_mini / "audio").glob("*.wav")),
                   key=lambda info: (info.duration, info.path))
    audio = [AudioEntry(audio_id, info.path, info.duration, info.sample_rate, info.channels)
             for audio_id, info in zip(AWKWARD_IDS, infos)]
    assert len(audio) == 3
    bad = root / "not audio.wav"
    bad.write_text("this is a text file, not a wav\n")
    audio.insert(1, AudioEntry(BAD_ID, str(bad), 3.0, 16000, 1))
    split = write_manifest(Manifest("mini", audio, {e.audio_id: ["a caption"] for e in audio}), root / "manifest")
    ckpt = _encoder_ckpt(root / "encoder.pt", seed=0)
    reference = root / "reference" / "mini.h5"
    extract(str(split), str(ckpt), str(reference), workers=1, progress=False, **SETTINGS)
    return {"root": root, "split": split, "ckpt": ckpt, "reference": reference, "audio": audio}


def test_plan_batches_longest_first_ties_in_order() -> None:
    assert plan_batches([1.0, 3.0, 2.0, 3.0, 0.5], 2) == [[1, 3], [2, 0], [4]]
    assert plan_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([1.0], 0)


def assert_same_store(a: Path, b: Path) -> None:
    """Every dataset and attribute equal (then the bytes too: the writer is deterministic)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)
        assert sorted(fa.keys()) == sorted(fb.keys())
        for key in fa:
            assert fa[key].dtype == fb[key].dtype and fa[key].shape == fb[key].shape, key
            np.testing.assert_array_equal(fa[key][()], fb[key][()], err_msg=key)
    assert a.read_bytes() == b.read_bytes()


def test_one_entry_per_clip(work: dict) -> None:
    sha = checkpoint_sha256(work["ckpt"])
    store = open_store(work["reference"], expect={"encoder": "cnn14", "checkpoint_sha256": sha,
                                                  "sample_rate": 16000})
    good = [e for e in work["audio"] if e.audio_id != BAD_ID]
    assert store.ids == [e.audio_id for e in good]  # manifest order
    encoder = build_audio_encoder("cnn14", width=0.25, sample_rate=16000, chunk_seconds=10.0)
    assert store.attrs["frame_hop"] == encoder.frame_hop == 5120 and store.attrs["frame_dim"] == 512
    for entry in good:
        frames, clip = store.frames(entry.audio_id), store.clip(entry.audio_id)
        n = round(entry.duration * 16000)
        expected = entry.duration * 16000 / encoder.frame_hop
        assert frames.shape == (int(encoder.num_frames(torch.tensor([n]))), 512)
        assert abs(len(frames) - expected) <= math.ceil(entry.duration / 10)  # up to one frame lost per window
        assert clip.shape == (512,) and np.isfinite(frames).all() and frames.std() > 0
    assert store.missing == {BAD_ID: store.missing[BAD_ID]} and "not a readable audio file" in store.missing[BAD_ID]
    errors = errors_csv_of(work["reference"]).read_text(encoding="utf-8")
    assert BAD_ID in errors and "not audio.wav" in errors
    assert not parts_dir_of(work["reference"]).exists()
    assert sorted(p.name for p in work["reference"].parent.iterdir()) == ["mini.h5", "mini.h5.errors.csv"]


def test_batch_padding_does_not_change_features(work: dict, tmp_path: Path) -> None:
    out = tmp_path / "b3.h5"
    extract(str(work["split"]), str(work["ckpt"]), str(out), workers=0, progress=False,
            **{**SETTINGS, "batch_size": 3})
    ref, got = open_store(work["reference"]), open_store(out)
    for audio_id in ref.ids:
        np.testing.assert_allclose(got.frames(audio_id), ref.frames(audio_id), rtol=1e-4, atol=1e-4)


def test_rerun_of_finished_store_changes_nothing(work: dict, capsys) -> None:
    before = work["reference"].stat().st_mtime_ns
    assert extract(str(work["split"]), str(work["ckpt"]), str(work["reference"]), progress=False,
                   **SETTINGS) == work["reference"]
    assert work["reference"].stat().st_mtime_ns == before and "already complete" in capsys.readouterr().err


def _command(work: dict, out: Path, *extra: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "features.extract", "--manifest", str(work["split"]), "--checkpoint",
            str(work["ckpt"]), "--out", str(out), "--batch-size", "1", "--chunk-seconds", "10", "--dtype",
            "float32", "--workers", str(workers), "--progress", "False", *extra]


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(work: dict, tmp_path: Path) -> None:
    out = tmp_path / "killed.h5"
    parts = parts_dir_of(out)
    proc = subprocess.Popen(_command(work, out), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(parts.glob("part-*.npz")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no part file appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the extractor and its audio-reading worker
    proc.wait()
    assert not out.exists(), "the kill came too late to test anything"
    done = sorted(p.name for p in parts.glob("part-*.npz"))
    assert 1 <= len(done) < 4
    result = subprocess.run(_command(work, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_store(out, work["reference"])
    assert errors_csv_of(out).read_text() == errors_csv_of(work["reference"]).read_text()
    assert not parts.exists()


def test_leftovers_of_a_kill_are_ignored(work: dict, tmp_path: Path) -> None:
    """Half-written files from a kill (part tmp, store tmp) never count as done, and are cleaned up."""
    out = tmp_path / "s.h5"
    extract(str(work["split"]), str(work["ckpt"]), str(out), num_shards=2, shard_id=0, workers=0, progress=False,
            **SETTINGS)
    parts = parts_dir_of(out)
    dead_pid = "4194303"  # above Linux's pid_max: no live process has it
    (parts / f".part-000001.npz.tmp{dead_pid}").write_bytes(b"PK\x03\x04 half a zip")  # common.io's temp names
    (tmp_path / f".s.h5.tmp{dead_pid}").write_bytes(b"\x89HDF\r\n half a store")
    (tmp_path / f".s.h5.errors.csv.tmp{dead_pid}").write_text("audio_id,pa")
    extract(str(work["split"]), str(work["ckpt"]), str(out), num_shards=2, shard_id=1, workers=0, progress=False,
            **SETTINGS)
    assert_same_store(out, work["reference"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.errors.csv"]


def test_two_shards_then_merge_equal_one_run(work: dict, tmp_path: Path) -> None:
    out = tmp_path / "sharded.h5"
    args = (str(work["split"]), str(work["ckpt"]), str(out))
    assert extract(*args, num_shards=2, shard_id=1, workers=0, progress=False, **SETTINGS) is None
    assert not out.exists()
    with pytest.raises(ValueError, match="batch 0 has no finished part"):
        merge(out)
    # a rerun of the same shard redoes nothing and still waits for the other
    assert extract(*args, num_shards=2, shard_id=1, workers=0, progress=False, **SETTINGS) is None
    assert extract(*args, num_shards=2, shard_id=0, workers=1, progress=False, **SETTINGS) == out
    assert_same_store(out, work["reference"])


@pytest.mark.slow
def test_merge_command_from_parts_folders(work: dict, tmp_path: Path) -> None:
    """Shards made in two places, merged by the command from both parts folders."""
    out = tmp_path / "m.h5"
    elsewhere = tmp_path / "machine2" / "m.h5"
    for shard, target in ((0, out), (1, elsewhere)):
        assert extract(str(work["split"]), str(work["ckpt"]), str(target), num_shards=2, shard_id=shard,
                       workers=0, progress=False, **SETTINGS) is None
    result = subprocess.run([sys.executable, "-m", "features.extract", "merge", "--out", str(out),
                             str(parts_dir_of(out)), str(parts_dir_of(elsewhere))],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_store(out, work["reference"])
    assert not parts_dir_of(out).exists() and parts_dir_of(elsewhere).exists()  # only its own folder is removed


def test_refuses_to_mix_checkpoints(work: dict, tmp_path: Path) -> None:
    other = _encoder_ckpt(tmp_path / "other.pt", seed=1)
    out = tmp_path / "s.h5"
    extract(str(work["split"]), str(work["ckpt"]), str(out), num_shards=2, shard_id=0, workers=0, progress=False,
            **SETTINGS)
    with pytest.raises(ValueError, match=r"s\.h5\.parts: holds partial features made differently.*checkpoint_sha256"):
        extract(str(work["split"]), str(other), str(out), num_shards=2, shard_id=1, workers=0, progress=False,
                **SETTINGS)
    with pytest.raises(ValueError, match="batch_size"):
        extract(str(work["split"]), str(work["ckpt"]), str(out), num_shards=2, shard_id=1, workers=0,
                progress=False, **{**SETTINGS, "batch_size": 2})
    # a finished store made by another checkpoint is refused too, not overwritten
    done = tmp_path / "done.h5"
    shutil.copy(work["reference"], done)
    with pytest.raises(ValueError, match=r"done\.h5: .*checkpoint_sha256: expected"):
        extract(str(work["split"]), str(other), str(done), workers=0, progress=False, **SETTINGS)
    assert done.read_bytes() == work["reference"].read_bytes()


def test_retrieval_checkpoint_is_refused_before_any_work(work: dict, tmp_path: Path) -> None:
    """Stages meet at files: extraction reads the audio_encoder.pt retrieval.train writes, not its best.pt."""
    encoder = build_audio_encoder("cnn14", width=0.25, sample_rate=16000)
    best = tmp_path / "exp" / "best.pt"
    best.parent.mkdir()
    torch.save({"kind": "retrieval", "model_args": {"audio_encoder": dict(encoder.spec)},
                "state_dict": {f"audio_encoder.{k}": v for k, v in encoder.state_dict().items()}}, best)
    out = tmp_path / "r.h5"
    with pytest.raises(ValueError, match=r"exp/best\.pt is a retrieval checkpoint .*audio_encoder\.pt that "
                                         r"retrieval\.train writes beside it"):
        extract(str(work["split"]), str(best), str(out), workers=0, progress=False, **SETTINGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # nothing written


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_run(work: dict, tmp_path: Path) -> None:
    out = tmp_path / "ddp.h5"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *_command(work, out)[1:]]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ref, got = open_store(work["reference"]), open_store(out)
    assert got.ids == ref.ids and got.missing == ref.missing
    for audio_id in ref.ids:  # torchrun runs each process single-threaded: same features up to rounding
        np.testing.assert_allclose(got.frames(audio_id), ref.frames(audio_id), rtol=1e-5, atol=1e-5)


# ---- a small generated split: short clips, one writer at a time ------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """Twelve 2-3 s sounds, a 0.044 s click (44.1 kHz) and a file without samples; their reference store."""
    root = tmp_path_factory.mktemp("small")
    folder = root / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(12):
        t = np.arange(int(16000 * (2.0 + k / 12))) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 100 * k) * t) + 0.05 * rng.normal(size=t.size)
        sf.write(folder / f"sound {k:02d}.wav", x.astype(np.float32), 16000)
    t = np.arange(1929) / 44100
    sf.write(folder / "click.wav", (0.8 * np.exp(-t / 0.01) * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
             44100, subtype="PCM_16")
    sf.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    audio = []
    for path in sorted(folder.iterdir()):
        info = sf.info(str(path))
        audio.append(AudioEntry(path.name, str(path), info.frames / info.samplerate, info.samplerate, 1))
    split = write_manifest(Manifest("small", audio, {}), root / "manifest")
    ckpt = _encoder_ckpt(root / "encoder.pt", seed=0)
    reference = root / "reference" / "small.h5"
    extract(str(split), str(ckpt), str(reference), workers=0, progress=False, **SETTINGS)
    return {"split": split, "ckpt": ckpt, "reference": reference}


def test_short_click_is_padded_and_empty_file_skipped(small: dict) -> None:
    store = open_store(small["reference"])
    assert "click.wav" in store.ids and len(store.ids) == 13
    encoder = build_audio_encoder("cnn14", width=0.25, sample_rate=16000)
    frames, clip = store.frames("click.wav"), store.clip("click.wav")
    assert frames.shape == (int(encoder.num_frames(torch.tensor([min_samples(16000)]))[0]), 512) == (1, 512)
    assert np.isfinite(frames).all() and np.isfinite(clip).all() and frames.std() > 0
    assert list(store.missing) == ["empty.wav"] and "no samples" in store.missing["empty.wav"]


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


@pytest.mark.slow
def test_second_writer_is_refused_at_once(small: dict, tmp_path: Path) -> None:
    """Two processes on one --out: the second exits 1 with one line naming the first; the first finishes."""
    out = tmp_path / "two.h5"
    first = subprocess.Popen(_command(small, out, workers=0), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        _wait_for(parts_dir_of(out) / "plan.json", first)
        first.send_signal(signal.SIGSTOP)  # held mid-extraction, so the second surely meets it
        assert not out.exists(), "the first process finished before the test could hold it"
        second = subprocess.run(_command(small, out, workers=0), cwd=REPO, capture_output=True, text=True,
                                timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    assert second.stderr.splitlines() == [
        f"features.extract: error: {out}: another extraction (pid {first.pid}) is writing it; wait for it to finish "
        "(or stop it), then run again"]
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    assert_same_store(out, small["reference"])
    rerun = subprocess.run(_command(small, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "already complete" in rerun.stderr, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.h5", "two.h5.errors.csv"]  # no lock file left


def test_shards_of_one_job_run_side_by_side_but_each_once(small: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sh.h5"
    args = (str(small["split"]), str(small["ckpt"]), str(out))
    with StoreLock(out, shard=0):  # shard 0 of a job, running
        with pytest.raises(ValueError, match=rf"sh\.h5: another extraction \(pid {os.getpid()}\) is writing shard 0"):
            extract(*args, num_shards=2, shard_id=0, workers=0, progress=False, **SETTINGS)
        with pytest.raises(ValueError, match=r"sh\.h5: another extraction is writing it"):
            extract(*args, workers=0, progress=False, **SETTINGS)
        with pytest.raises(ValueError, match=r"sh\.h5: another extraction is writing it"):
            merge(out)
        assert extract(*args, num_shards=2, shard_id=1, workers=0, progress=False, **SETTINGS) is None
        assert "other shards are still running" in capsys.readouterr().err
    assert extract(*args, num_shards=2, shard_id=0, workers=0, progress=False, **SETTINGS) == out
    assert_same_store(out, small["reference"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sh.h5", "sh.h5.errors.csv"]
    with StoreLock(out):  # the whole store, held: not even a shard may start
        with pytest.raises(ValueError, match=rf"sh\.h5: another extraction \(pid {os.getpid()}\) is writing it"):
            extract(*args, num_shards=2, shard_id=1, workers=0, progress=False, **SETTINGS)


@pytest.mark.slow
def test_lock_goes_with_a_killed_extractor(small: dict, tmp_path: Path) -> None:
    """SIGKILL of the extractor alone (its audio-reading worker lives on a while): a rerun may start at once."""
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen(_command(small, out, workers=1), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(parts_dir_of(out) / "part-000000.npz", proc)
        proc.kill()
        proc.wait()
        assert not out.exists(), "the kill came too late to test anything"
        assert extract(str(small["split"]), str(small["ckpt"]), str(out), workers=0, progress=False,
                       **SETTINGS) == out
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned worker
        except ProcessLookupError:
            pass
    assert_same_store(out, small["reference"])


def test_an_encoder_overflowing_float16_leaves_those_clips_missing_never_inf(small: dict, tmp_path: Path) -> None:
    """Finite weights can still give values past float16's range: such clips are reported, never stored as inf."""
    checkpoint = torch.load(small["ckpt"], weights_only=True)
    key = next(k for k in checkpoint["state_dict"] if k.endswith("fc1.weight"))
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] * 1e7
    loud = tmp_path / "loud.pt"
    torch.save(checkpoint, loud)
    out = tmp_path / "loud.h5"
    extract(str(small["split"]), str(loud), str(out), workers=0, progress=False, batch_size=4, dtype="float16")
    store = open_store(out)
    overflowed = [i for i, reason in store.missing.items() if "encoder gave non-finite values" in reason]
    assert overflowed and "empty.wav" in store.missing
    assert all(np.isfinite(store.frames(i)).all() and np.isfinite(store.clip(i)).all() for i in store.ids)


def test_assembling_on_a_full_disk_names_the_device_and_keeps_the_parts(small: dict, small_disk, tmp_path) -> None:
    parts = []
    for shard in (0, 1):  # parts made elsewhere, merged onto the small disk
        target = tmp_path / f"machine{shard}" / "small.h5"
        assert extract(str(small["split"]), str(small["ckpt"]), str(target), num_shards=2, shard_id=shard,
                       workers=0, progress=False, **SETTINGS) is None
        parts.append(parts_dir_of(target))
    out = small_disk.path / "small.h5"
    small_disk.fill(leave=64 << 10)  # room for the lock and the errors table, not for the store
    done = subprocess.run([sys.executable, "-m", "features.extract", "merge", "--out", str(out), *map(str, parts)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and f"No space left on tmpfs (mounted at {small_disk.path})" in done.stderr, \
        done.stderr
    assert "a bug?" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler", "small.h5.errors.csv"]  # no temporaries
    small_disk.free()
    merge(out, *parts, keep_parts=True)
    assert_same_store(out, small["reference"])
