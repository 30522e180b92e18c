"""Captioning raw audio (captioning.infer) and caption bundles (captioning.bundle) on real Clotho clips.

Models are small and random: a CNN10 (width 0.25, 16 kHz) audio encoder saved the project's way, and captioners
built with ``build_captioner`` and saved the way ``captioning.train`` saves them (``model_checkpoint``), recording
the encoder name, checkpoint hash and frame dimension of the features they were "trained" on.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.bundle import KIND, load_bundle, load_pipeline, make_bundle
from captioning.checkpoint import model_checkpoint
from captioning.infer import caption_files, encode_waveforms, infer, list_audio
from captioning.models import build_captioner
from captioning.vocab import Vocabulary
from common import save_checkpoint
from features.audio import load_audio
from features.encoders import build_audio_encoder
from features.weights import checkpoint_sha256, save_audio_encoder

REPO = Path(__file__).resolve().parents[2]
N_CLIPS = 7


def _captioner(path: Path, vocab: Vocabulary, decoder: str, frame_dim: int, feature_attrs: dict, seed: int) -> Path:
    torch.manual_seed(seed)
    args = {"encoder": "bigru", "encoder_args": {"hidden": 16, "n_layers": 1}, "decoder": decoder,
            "decoder_args": {"d_model": 32, "n_layers": 1, **({"d_ff": 64} if decoder == "transformer" else {})},
            "frame_dim": frame_dim, "vocab_size": len(vocab)}
    model = build_captioner(args).eval()
    with torch.no_grad():  # a stronger input projection, so random captions depend visibly on the audio
        model.encoder.input_proj[0].weight.mul_(10.0)
    save_checkpoint(model_checkpoint(model, args, vocab, feature_attrs), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data) -> dict:
    """Encoder + two captioners (transformer, gru) on disk, a vocabulary from the clips' real captions."""
    folder = tmp_path_factory.mktemp("infer_models")
    torch.manual_seed(0)
    encoder = build_audio_encoder("cnn10", sample_rate=16000, width=0.25)
    save_audio_encoder(encoder, folder / "stage1.pt")
    with open(shared_data / "clotho_mini" / "clotho_captions_mini.csv", encoding="utf-8", newline="") as f:
        vocab = Vocabulary.build(c for row in csv.DictReader(f) for k, c in row.items() if k != "file_name")
    attrs = {"encoder": "cnn10", "checkpoint_sha256": checkpoint_sha256(folder / "stage1.pt"),
             "frame_dim": encoder.frame_dim}
    return {"folder": folder, "encoder": folder / "stage1.pt", "frame_dim": encoder.frame_dim, "vocab": vocab,
            "attrs": attrs, "audio": shared_data / "clotho_mini" / "audio",
            "a": _captioner(folder / "a.pt", vocab, "transformer", encoder.frame_dim, attrs, seed=1),
            "b": _captioner(folder / "b.pt", vocab, "gru", encoder.frame_dim, attrs, seed=2)}


@pytest.fixture(scope="module")
def reference(models) -> dict:
    """Captions of the 7 clips by the two-model ensemble from separate checkpoints, batches of 8."""
    return infer(str(models["audio"]), audio_encoder=str(models["encoder"]),
                 captioners=f"{models['a']},{models['b']}", batch_size=8, progress=False)


def test_captions_every_real_clip(models, reference):
    names = sorted(os.listdir(models["audio"]))
    assert list(reference["captions"]) == names and len(names) == N_CLIPS
    assert any(" " in n for n in names)
    assert reference["errors"] == {}
    assert all(c.strip() for c in reference["captions"].values())
    assert len(set(reference["captions"].values())) > 1, "captions should depend on the audio"


def test_cli_writes_json_and_csv(models, reference, tmp_path):
    out, sub = tmp_path / "pred.json", tmp_path / "sub" / "submission.csv"
    done = subprocess.run([sys.executable, "-m", "captioning.infer", str(models["audio"]),
                           "--audio-encoder", str(models["encoder"]), "--captioners", f"{models['a']},{models['b']}",
                           "--out", str(out), "--csv", str(sub), "--progress", "False"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["audio_id"] for r in rows] == list(reference["captions"])
    assert all(Path(r["path"]).name == r["audio_id"] and Path(r["path"]).is_file() for r in rows)
    assert {r["audio_id"]: r["caption"] for r in rows} == reference["captions"]
    with open(sub, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["file_name", "caption_predicted"]
    assert dict(table[1:]) == reference["captions"] and len(table) == N_CLIPS + 1


def test_bundle_gives_the_same_captions(models, reference, tmp_path):
    path = make_bundle(str(models["encoder"]), f"{models['a']},{models['b']}", str(tmp_path / "bundle.pt"),
                       beam_size=3)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["kind"] == KIND and len(raw["model_args"]["captioners"]) == 2
    assert raw["sources"] == {"audio_encoder": "stage1.pt", "captioners": ["a.pt", "b.pt"]}
    result = infer(str(models["audio"]), bundle=str(path), progress=False)
    assert result["captions"] == reference["captions"]


def test_bad_file_is_reported_and_skipped(models, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(models["audio"].iterdir())[:2]
    for clip in good:
        (folder / clip.name).symlink_to(clip)
    (folder / "not audio.wav").write_text("this is text, not a wave file\n", encoding="utf-8")
    (folder / "notes.txt").write_text("ignored: not an audio extension\n", encoding="utf-8")
    result = infer(str(folder), audio_encoder=str(models["encoder"]), captioners=str(models["a"]),
                   out=str(tmp_path / "pred.json"), progress=False)
    assert sorted(result["captions"]) == sorted(c.name for c in good)
    bad = str(folder / "not audio.wav")
    assert list(result["errors"]) == [bad] and "not a readable audio file" in result["errors"][bad]
    assert f"skipping {bad}: not a readable audio file" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))) == 2


def test_mismatched_captioner_is_refused(models, tmp_path):
    wrong_dim = _captioner(tmp_path / "wide.pt", models["vocab"], "gru", 64, {**models["attrs"], "frame_dim": 64}, 3)
    with pytest.raises(ValueError, match=rf"wide\.pt: captioner reads 64-d frames, but audio encoder .*stage1\.pt "
                                         rf"\('cnn10'\) writes {models['frame_dim']}-d frames"):
        load_pipeline(models["encoder"], str(wrong_dim))
    other = _captioner(tmp_path / "other.pt", models["vocab"], "gru", models["frame_dim"],
                       {**models["attrs"], "checkpoint_sha256": "f" * 64}, 4)
    with pytest.raises(ValueError, match=rf"other\.pt: .*sha256 {'f' * 64}.*stage1\.pt is 'cnn10' "
                                         rf"\(checkpoint sha256 {models['attrs']['checkpoint_sha256']}\)"):
        load_pipeline(models["encoder"], str(other))


def test_batched_equals_one_at_a_time(models, reference):
    pipeline = load_pipeline(models["encoder"], f"{models['a']},{models['b']}")
    files = list_audio([models["audio"]])
    waves = [torch.from_numpy(load_audio(f, pipeline.encoder.sample_rate)) for f in files]
    with torch.inference_mode():
        batch = encode_waveforms(pipeline.encoder, waves)
        for row, wave in enumerate(waves):
            alone = encode_waveforms(pipeline.encoder, [wave])
            n = int(alone["frame_lengths"][0])
            assert int(batch["frame_lengths"][row]) == n
            torch.testing.assert_close(batch["frames"][row, :n], alone["frames"][0, :n], atol=1e-4, rtol=1e-4)
    one_by_one, errors = caption_files(pipeline, files, batch_size=1)
    assert errors == {}
    assert {Path(p).name: c for p, c in one_by_one.items()} == reference["captions"]


def test_bundle_loads_with_its_own_decoding(models, tmp_path):
    path = make_bundle(str(models["encoder"]), str(models["b"]), str(tmp_path / "greedy.pt"), beam_size=1,
                       max_len=5, chunk_seconds=5.0)
    pipeline = load_bundle(path)
    assert pipeline.decoding["beam_size"] == 1 and pipeline.encoder.spec["chunk_seconds"] == 5.0
    with pytest.raises(ValueError, match="beam_size"):
        make_bundle(str(models["encoder"]), str(models["b"]), str(tmp_path / "bad.pt"), beam_size=0)
    assert not (tmp_path / "bad.pt").exists()
