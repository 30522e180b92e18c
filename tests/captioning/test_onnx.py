"""ONNX export of a caption bundle (captioning.export) and its ONNX Runtime stand-ins (captioning.onnx_runtime).

Real small models with random weights (a CNN10 at width 0.25 and 16 kHz, a Transformer and a GRU captioner) in a
bundle made the project's way, exported with the command, and a dozen clips of the synthetic corpus's evaluation
split (3 to 20 s: clips longer than the 10-s window run in windows).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.bundle import load_bundle, make_bundle
from captioning.export import export_bundle
from captioning.infer import infer
from captioning.vocab import Vocabulary
from corpus.synth import make_corpus
from features.audio import load_audio
from features.encode import encode_waveforms
from features.encoders import build_audio_encoder
from features.weights import checkpoint_sha256, save_audio_encoder
from tests.captioning.conftest import save_random_captioner

pytestmark = pytest.mark.slow  # the exported bundle takes about 15 s to make (once per module)
REPO = Path(__file__).resolve().parents[2]
N_CLIPS = 12
TOL = 1e-4


def _bundle(folder: Path, vocab: Vocabulary, seed: int) -> Path:
    torch.manual_seed(seed)
    encoder = build_audio_encoder("cnn10", sample_rate=16000, width=0.25)
    save_audio_encoder(encoder, folder / f"encoder{seed}.pt")
    attrs = {"encoder": "cnn10", "checkpoint_sha256": checkpoint_sha256(folder / f"encoder{seed}.pt"),
             "frame_dim": encoder.frame_dim}
    caps = [save_random_captioner(folder / f"{d}{seed}.pt", vocab, d, encoder.frame_dim, attrs, seed + k)
            for k, d in enumerate(("transformer", "gru"))]
    return make_bundle(str(folder / f"encoder{seed}.pt"), ",".join(map(str, caps)), str(folder / f"bundle{seed}.pt"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Twelve synthetic evaluation clips; a bundle exported by the command; a second bundle (other weights)."""
    folder = tmp_path_factory.mktemp("onnx")
    make_corpus(folder / "synth", N_CLIPS, seed=5, workers=1, progress=False, shares=(0.0, 0.0, 1.0))
    with open(folder / "synth" / "clotho_captions_evaluation.csv", encoding="utf-8", newline="") as f:
        vocab = Vocabulary.build(c for row in csv.DictReader(f) for k, c in row.items() if k != "file_name")
    bundle = _bundle(folder, vocab, seed=0)
    done = subprocess.run([sys.executable, "-m", "captioning.export", "--bundle", str(bundle),
                           "--out", str(folder / "onnx")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ONNX export" in done.stdout
    return {"folder": folder, "audio": folder / "synth" / "clotho_audio_evaluation", "bundle": bundle,
            "onnx": folder / "onnx", "other": _bundle(folder, vocab, seed=7)}


@pytest.fixture(scope="module")
def pipelines(exported) -> tuple:
    return (load_bundle(exported["bundle"]),
            load_bundle(exported["bundle"], runtime="onnx", onnx_dir=exported["onnx"]))


def test_audio_frames_match_torch(exported, pipelines):
    torch_p, onnx_p = pipelines
    rate = torch_p.encoder.sample_rate
    clips = sorted(exported["audio"].glob("*.wav"))[:5]
    waves = [load_audio(p, rate) for p in clips]
    tail = torch_p.encoder.chunk_samples + 1000  # a last window too short to make a frame of its own
    waves.append(np.random.default_rng(0).normal(0, 0.1, tail).astype(np.float32))
    waves.append(waves[0][: rate // 10])  # 0.1 s: padded to one frame
    assert max(len(w) for w in waves) > torch_p.encoder.chunk_samples  # the windowing is exercised
    with torch.inference_mode():
        ref, got = encode_waveforms(torch_p.encoder, waves), encode_waveforms(onnx_p.encoder, waves)
    assert got["frame_lengths"].tolist() == ref["frame_lengths"].tolist()
    assert got["frames"].shape == ref["frames"].shape
    assert float((got["frames"] - ref["frames"]).abs().max()) < TOL
    assert float((got["clip"] - ref["clip"]).abs().max()) < TOL
    assert float(ref["frames"].abs().max()) > 0.1  # a non-trivial comparison


@pytest.mark.parametrize("member,decoder", [(0, "transformer"), (1, "gru")])
def test_step_log_probabilities_match_torch(pipelines, member, decoder):
    torch_p, onnx_p = pipelines
    ref_model, onnx_model = torch_p.scorer.models[member], onnx_p.scorer.models[member]
    assert ref_model.model_args["decoder"] == decoder
    gen = torch.Generator().manual_seed(member)
    frames, lengths = torch.randn(3, 9, torch_p.encoder.frame_dim, generator=gen), torch.tensor([9, 4, 6])
    with torch.inference_mode():
        ctx = ref_model.decoder.prepare(ref_model.encode(frames, lengths))
        octx = onnx_model.decoder.prepare(onnx_model.encode(frames, lengths))
        state, ostate = ref_model.decoder.init_state(ctx), onnx_model.decoder.init_state(octx)
        tokens = torch.full((3,), torch_p.vocab.bos)
        for _ in range(6):  # the Transformer's caches grow from empty
            logits, state = ref_model.decoder.step(ctx, state, tokens)
            ologits, ostate = onnx_model.decoder.step(octx, ostate, tokens)
            ref_logp, got_logp = logits.log_softmax(-1), ologits.log_softmax(-1)
            assert float((ref_logp - got_logp).abs().max()) < TOL
            tokens = ref_logp.argmax(-1)
    assert float(ref_logp.std()) > 0.01  # not a flat distribution


@pytest.fixture(scope="module")
def reference(exported) -> dict:
    """The torch pipeline's beam captions of the twelve clips, batches of 8."""
    return infer(str(exported["audio"]), bundle=str(exported["bundle"]), batch_size=8, progress=False)


def test_beam_captions_are_identical(exported, reference):
    got = infer(str(exported["audio"]), bundle=str(exported["bundle"]), runtime="onnx",
                onnx_dir=str(exported["onnx"]), batch_size=8, progress=False)
    assert len(reference["captions"]) == N_CLIPS and not reference["errors"]
    assert got["captions"] == reference["captions"]
    assert len(set(reference["captions"].values())) > 1, "captions should depend on the audio"


def test_infer_command_runs_the_export(exported, reference, tmp_path):
    out, files = tmp_path / "pred.json", sorted(exported["audio"].glob("*.wav"))[:3]
    done = subprocess.run([sys.executable, "-m", "captioning.infer", *map(str, files), "--bundle",
                           str(exported["bundle"]), "--runtime", "onnx", "--onnx-dir", str(exported["onnx"]),
                           "--batch-size", "2", "--out", str(out), "--progress", "False"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert {r["audio_id"]: r["caption"] for r in rows} == {f.name: reference["captions"][f.name] for f in files}


def test_onnx_runtime_needs_a_bundle_and_a_folder(exported):
    with pytest.raises(ValueError, match="onnx_dir"):
        load_bundle(exported["bundle"], runtime="onnx")
    with pytest.raises(ValueError, match="runtime"):
        load_bundle(exported["bundle"], runtime="tensorrt", onnx_dir=exported["onnx"])


def _copy(exported, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported["onnx"], tmp_path / "onnx"))


def test_folder_without_manifest_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    (folder / "export.json").unlink()
    with pytest.raises(ValueError, match=r"export\.json: missing.*not an ONNX export"):
        load_bundle(exported["bundle"], runtime="onnx", onnx_dir=folder)


def test_corrupt_graph_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    graph = folder / "captioner1_step.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    graph.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"captioner1_step\.onnx: SHA-256 differs"):
        load_bundle(exported["bundle"], runtime="onnx", onnx_dir=folder)


def test_unreadable_graph_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    graph = folder / "audio_head.onnx"
    graph.write_bytes(b"not a graph")
    manifest = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    manifest["audio_encoder"]["head"]["sha256"] = checkpoint_sha256(graph)  # past the hash: ONNX Runtime refuses it
    (folder / "export.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match=r"audio_head\.onnx: ONNX Runtime cannot load it"):
        load_bundle(exported["bundle"], runtime="onnx", onnx_dir=folder)


def test_export_of_another_bundle_is_refused(exported):
    with pytest.raises(ValueError, match=r"export\.json: exported from another bundle .*bundle0\.pt"):
        load_bundle(exported["other"], runtime="onnx", onnx_dir=exported["onnx"])


def test_export_help_explains_the_command():
    done = subprocess.run([sys.executable, "-m", "captioning.export", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PAGER": "cat"})
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr  # fire writes help to stderr when not on a terminal
    assert "--bundle B.pt --out DIR" in text and "--runtime onnx" in text and "export.json" in text


@pytest.mark.parametrize("edit", [("audio_encoder", "spec", "chunk_seconds", 1.0),
                                  ("audio_encoder", "spec", "sample_rate", 32000),
                                  ("captioners", 0, "decoder", "gru")])
def test_an_edited_manifest_is_refused(exported, tmp_path, edit):
    """What export.json records that changes results is the bundle's: an edited copy never captions differently."""
    folder = _copy(exported, tmp_path)
    manifest = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    *keys, last, value = edit
    node = manifest
    for key in keys:
        node = node[key]
    assert node[last] != value
    node[last] = value
    (folder / "export.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"export\.json: .*{last}.* differs from the bundle's"):
        load_bundle(exported["bundle"], runtime="onnx", onnx_dir=folder)


def test_a_killed_export_over_a_good_one_leaves_it_usable(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "captioning.export", "--bundle", str(exported["bundle"]),
                             "--out", str(folder)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temp = tmp_path / f".onnx.tmp{proc.pid}"
    deadline = time.monotonic() + 120
    while not any(temp.glob("*.onnx")) and time.monotonic() < deadline:  # killed while writing graphs
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    load_bundle(exported["bundle"], runtime="onnx", onnx_dir=folder)
    export_bundle(exported["bundle"], folder)  # a new export cleans up after the killed one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_an_export_onto_a_full_disk_is_refused_naming_the_device(exported, small_disk):
    folder = Path(shutil.copytree(exported["onnx"], small_disk.path / "onnx"))
    small_disk.fill(leave=64 << 10)
    with pytest.raises(OSError, match=rf"No space left on tmpfs \(mounted at {small_disk.path}\): onnx needs"):
        export_bundle(exported["bundle"], folder)
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler", "onnx"]
    load_bundle(exported["bundle"], runtime="onnx", onnx_dir=folder)


def test_an_export_never_replaces_a_folder_of_other_files(exported, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"{tmp_path}: holds files that are not part of an ONNX export \(notes.txt\)"):
        export_bundle(exported["bundle"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
