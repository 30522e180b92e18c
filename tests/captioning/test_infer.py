"""Captioning raw audio (captioning.infer) and caption bundles (captioning.bundle) on Clotho-mini clips, and on
generated short, empty and silent files.

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

import numpy as np
import pytest
import soundfile as sf
import torch

from captioning.bundle import KIND, load_bundle, load_pipeline, make_bundle
from captioning.infer import caption_files, infer, list_audio
from captioning.vocab import Vocabulary
from features.audio import load_audio, probe
from features.encode import encode_waveforms
from features.encoders import build_audio_encoder
from features.extract import extract
from features.manifest import AudioEntry, Manifest, write_manifest
from features.store import open_store
from features.weights import CHUNK_SECONDS, checkpoint_sha256, save_audio_encoder
from tests.captioning.conftest import save_random_captioner

REPO = Path(__file__).resolve().parents[2]
N_CLIPS = 7  # clotho_mini, real or generated


@pytest.fixture(scope="module")
def models(tmp_path_factory, clotho_mini: Path) -> dict:
    """Encoder + two captioners (transformer, gru) on disk, a vocabulary from the clips' real captions."""
    folder = tmp_path_factory.mktemp("infer_models")
    torch.manual_seed(0)
    encoder = build_audio_encoder("cnn10", sample_rate=16000, width=0.25)
    save_audio_encoder(encoder, folder / "stage1.pt")
    with open(clotho_mini / "clotho_captions_mini.csv", encoding="utf-8", newline="") as f:
        vocab = Vocabulary.build(c for row in csv.DictReader(f) for k, c in row.items() if k != "file_name")
    attrs = {"encoder": "cnn10", "checkpoint_sha256": checkpoint_sha256(folder / "stage1.pt"),
             "frame_dim": encoder.frame_dim}
    return {"folder": folder, "encoder": folder / "stage1.pt", "frame_dim": encoder.frame_dim, "vocab": vocab,
            "attrs": attrs, "audio": clotho_mini / "audio",
            "a": save_random_captioner(folder / "a.pt", vocab, "transformer", encoder.frame_dim, attrs, seed=1),
            "b": save_random_captioner(folder / "b.pt", vocab, "gru", encoder.frame_dim, attrs, seed=2)}


@pytest.fixture(scope="module")
def reference(models) -> dict:
    """Captions of the 7 clips by the two-model ensemble from separate checkpoints, batches of 8."""
    return infer(str(models["audio"]), audio_encoder=str(models["encoder"]),
                 captioners=f"{models['a']},{models['b']}", batch_size=8, progress=False)


def test_captions_every_real_clip(models, reference):
    names = sorted(n for n in os.listdir(models["audio"]) if n.endswith(".wav"))
    assert list(reference["captions"]) == names and len(names) == N_CLIPS
    assert any(" " in n for n in names)
    assert reference["errors"] == {} and reference["silent"] == []
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
    wrong_dim = save_random_captioner(tmp_path / "wide.pt", models["vocab"], "gru", 64,
                                      {**models["attrs"], "frame_dim": 64}, 3)
    with pytest.raises(ValueError, match=rf"wide\.pt: captioner reads 64-d frames, but audio encoder .*stage1\.pt "
                                         rf"\('cnn10'\) writes {models['frame_dim']}-d frames"):
        load_pipeline(models["encoder"], str(wrong_dim))
    other = save_random_captioner(tmp_path / "other.pt", models["vocab"], "gru", models["frame_dim"],
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
    one_by_one, errors, silent, _ = caption_files(pipeline, files, batch_size=1)
    assert errors == {} and silent == []
    assert {Path(p).name: c for p, c in one_by_one.items()} == reference["captions"]


def test_bundle_loads_with_its_own_decoding(models, tmp_path):
    path = make_bundle(str(models["encoder"]), str(models["b"]), str(tmp_path / "greedy.pt"), beam_size=1,
                       max_len=5, chunk_seconds=5.0)
    pipeline = load_bundle(path)
    assert pipeline.decoding["beam_size"] == 1 and pipeline.encoder.spec["chunk_seconds"] == 5.0
    captions = infer(str(models["audio"]), bundle=str(path), progress=False)["captions"]  # its settings, unless given
    assert captions and all(len(c.split()) <= 5 for c in captions.values())
    assert load_bundle(path, chunk_seconds=CHUNK_SECONDS).encoder.spec["chunk_seconds"] == CHUNK_SECONDS
    whole = load_bundle(path, chunk_seconds=0).encoder
    assert whole.chunk_samples is None and "chunk_seconds" not in whole.spec
    with pytest.raises(ValueError, match="beam_size"):
        make_bundle(str(models["encoder"]), str(models["b"]), str(tmp_path / "bad.pt"), beam_size=0)
    assert not (tmp_path / "bad.pt").exists()


def test_raw_audio_is_encoded_as_extraction_encodes_it(models, tmp_path):
    """One long-audio path: the window chosen at load time (CHUNK_SECONDS by default) and the same batching give
    infer's encoder the frames the feature store holds, for clips longer than a window."""
    pipeline = load_pipeline(models["encoder"], str(models["a"]))
    assert pipeline.encoder.spec["chunk_seconds"] == CHUNK_SECONDS and pipeline.encoder.chunk_samples is not None
    files = list_audio([models["audio"]])[:3]
    infos = [probe(f, scan=False) for f in files]
    audio = [AudioEntry(f.name, str(f), i.duration, i.sample_rate, i.channels) for f, i in zip(files, infos)]
    assert all(e.duration > CHUNK_SECONDS for e in audio)
    split = write_manifest(Manifest("three", audio, {}), tmp_path / "manifest")
    store = open_store(extract(str(split), str(models["encoder"]), str(tmp_path / "three.h5"), batch_size=2,
                               workers=0, progress=False))
    waves = [load_audio(f, pipeline.encoder.sample_rate) for f in files]
    with torch.inference_mode():
        encoded = encode_waveforms(pipeline.encoder, waves)
    for row, entry in enumerate(audio):
        n = int(encoded["frame_lengths"][row])
        assert n == store.num_frames(entry.audio_id)
        torch.testing.assert_close(encoded["frames"][row, :n], torch.from_numpy(store.frames(entry.audio_id)),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(encoded["clip"][row], torch.from_numpy(store.clip(entry.audio_id)),
                                   atol=1e-4, rtol=1e-4)


def test_retrieval_checkpoint_is_refused_clearly(models, tmp_path):
    encoder = build_audio_encoder("cnn10", sample_rate=16000, width=0.25)
    best = tmp_path / "best.pt"
    torch.save({"kind": "retrieval", "model_args": {"audio_encoder": dict(encoder.spec)},
                "state_dict": {f"audio_encoder.{k}": v for k, v in encoder.state_dict().items()}}, best)
    message = r"best\.pt is a retrieval checkpoint .*pass the audio_encoder\.pt that retrieval\.train writes beside it"
    with pytest.raises(ValueError, match=message):
        infer(str(models["audio"]), audio_encoder=str(best), captioners=str(models["a"]), progress=False)
    with pytest.raises(ValueError, match=message):
        make_bundle(str(best), str(models["a"]), str(tmp_path / "bundle.pt"))
    assert not (tmp_path / "bundle.pt").exists()


def test_short_click_is_captioned_and_empty_file_refused(models, tmp_path, capsys):
    """A 0.044 s click is padded to 0.1 s and captioned, alone or beside a long clip; a file without samples is not."""
    folder = tmp_path / "short"
    folder.mkdir()
    t = np.arange(1929) / 44100
    sf.write(folder / "click.wav", (0.8 * np.exp(-t / 0.01) * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
             44100, subtype="PCM_16")
    sf.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    long_clip = sorted(models["audio"].glob("*.wav"))[0]
    (folder / long_clip.name).symlink_to(long_clip)
    result = infer(str(folder), audio_encoder=str(models["encoder"]), captioners=str(models["a"]), batch_size=2,
                   progress=False)
    assert sorted(result["captions"]) == sorted(["click.wav", long_clip.name])
    assert result["captions"]["click.wav"].strip() and result["silent"] == []
    assert result["errors"] == {str(folder / "empty.wav"): "no samples (header only)"}
    assert f"skipping {folder / 'empty.wav'}: no samples" in capsys.readouterr().err
    alone = infer(str(folder / "click.wav"), audio_encoder=str(models["encoder"]), captioners=str(models["a"]),
                  progress=False)
    assert alone["captions"] == {"click.wav": result["captions"]["click.wav"]}  # padding, not the batch, decides


def test_silent_clip_is_captioned_but_flagged(models, tmp_path, capsys):
    folder = tmp_path / "quiet"
    folder.mkdir()
    normal = sorted(models["audio"].glob("*.wav"))[0]
    (folder / normal.name).symlink_to(normal)
    sf.write(folder / "zeros.wav", np.zeros(32000, np.float32), 16000)
    dither = np.random.default_rng(0).integers(-2, 3, 32000) / 32768  # +-2 steps of 16 bits: about -84 dBFS
    sf.write(folder / "dither.wav", dither.astype(np.float32), 16000, subtype="PCM_16")
    out, sub = tmp_path / "pred.json", tmp_path / "sub.csv"
    result = infer(str(folder), audio_encoder=str(models["encoder"]), captioners=str(models["a"]), out=str(out),
                   csv=str(sub), progress=False)
    assert list(result["captions"]) == sorted(["dither.wav", normal.name, "zeros.wav"])
    assert all(c.strip() for c in result["captions"].values())  # captioned all the same
    assert result["silent"] == ["dither.wav", "zeros.wav"]
    rows = {r["audio_id"]: r for r in json.loads(out.read_text(encoding="utf-8"))}
    assert rows["zeros.wav"]["silent"] is True and rows["dither.wav"]["silent"] is True
    assert list(rows[normal.name]) == ["audio_id", "path", "caption"]  # unchanged for audible clips
    with open(sub, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["file_name", "caption_predicted"] and all(len(row) == 2 for row in table)
    assert dict(table[1:]) == result["captions"]
    err = capsys.readouterr().err
    assert f"note: {folder / 'zeros.wav'}: silent audio (digital silence)" in err
    assert f"note: {folder / 'dither.wav'}: silent audio (peak -84.3 dBFS <= -80 dBFS)" in err
    assert normal.name not in err and "2 silent (flagged)" in err


def test_flac_without_length_is_captioned_and_a_corrupt_file_skipped(models, tmp_path, capsys):
    """A FLAC whose header states no length (libsndfile: SF_COUNT_MAX frames) is read through and captioned as its
    original is; a corrupt FLAC is reported by name and skipped; the other clips are captioned."""
    from tests.features.test_audio import flac_stating_length

    t = np.arange(24000) / 16000
    wave = (0.4 * np.sin(2 * np.pi * (300 + 400 * t) * t)).astype(np.float32)
    sf.write(tmp_path / "original.flac", wave, 16000, subtype="PCM_16")
    folder = tmp_path / "mixed"
    folder.mkdir()
    flac_stating_length(tmp_path / "original.flac", folder / "no length.flac")
    (folder / "broken.flac").write_bytes((tmp_path / "original.flac").read_bytes()[:3000])
    good = sorted(models["audio"].glob("*.wav"))[0]
    (folder / good.name).symlink_to(good)
    result = infer(str(folder), audio_encoder=str(models["encoder"]), captioners=str(models["a"]), batch_size=2,
                   progress=False)
    assert sorted(result["captions"]) == sorted([good.name, "no length.flac"])
    broken = str(folder / "broken.flac")
    assert list(result["errors"]) == [broken] and result["errors"][broken].startswith("corrupt data")
    assert f"skipping {broken}: corrupt data" in capsys.readouterr().err
    alone = infer(str(tmp_path / "original.flac"), audio_encoder=str(models["encoder"]),
                  captioners=str(models["a"]), progress=False)
    assert alone["captions"]["original.flac"] == result["captions"]["no length.flac"]


def test_outputs_are_checked_before_any_work(models, tmp_path, capsys):
    """A folder as --out, an output whose folder cannot be made, or --out and --csv on one file are refused before a
    model or a clip is read: the same refusal comes with model paths that do not exist, and nothing is logged."""
    audio, encoder, captioner = str(models["audio"]), str(models["encoder"]), str(models["a"])
    absent = str(tmp_path / "absent.pt")
    taken = tmp_path / "taken"
    taken.mkdir()
    (tmp_path / "a_file").write_text("not a folder\n", encoding="utf-8")
    cases = [
        (dict(out=str(taken)), rf"--out {taken}: is a folder; expected a file to write"),
        (dict(out=str(tmp_path / "new") + "/"), r"--out .*new/: is a folder; expected a file to write"),
        (dict(csv=str(tmp_path / "a_file" / "sub" / "submission.csv")),
         rf"--csv .*submission\.csv: its folder cannot be created, {tmp_path / 'a_file'} is a file"),
        (dict(out=str(tmp_path / "p.json"), csv=str(tmp_path / "p.json")),
         r"--csv and --out name the same file .*p\.json"),
    ]
    for outputs, message in cases:
        with pytest.raises(ValueError, match=message):
            infer(audio, audio_encoder=encoder, captioners=captioner, progress=False, **outputs)
        with pytest.raises(ValueError, match=message):  # before the models: these do not exist
            infer(audio, audio_encoder=absent, captioners=absent, progress=False, **outputs)
        with pytest.raises(ValueError, match=message):
            infer(audio, bundle=absent, progress=False, **outputs)
    assert capsys.readouterr().err == ""  # no clip skipped, noted or captioned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "taken"] and not any(taken.iterdir())
