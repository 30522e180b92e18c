"""Corpus preparation into manifests: Clotho clips (real or generated), a corpus of bad files, the synthetic corpus
with its questions, AudioCaps naming, manifest I/O."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from corpus.prepare import prepare_audiocaps, prepare_clotho, prepare_macs, prepare_synth
from corpus.synth import clip_questions, sample_scene
from corpus.synth.questions import LABELS, scene_labels
from eval.qa import read_qa
from features.manifest import AudioEntry, Manifest, read_manifest, read_manifests, write_manifest

REPO = Path(__file__).resolve().parents[2]
HEADER = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]


def tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def write_table(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def caps(name: str) -> list[str]:
    return [f"{name} caption {i}" for i in range(1, 6)]


# --- Clotho -----------------------------------------------------------------------------------------------------

def test_clotho_mini_prepares(clotho_mini: Path, tmp_path: Path) -> None:
    reports = prepare_clotho(tmp_path, audio_dir=clotho_mini / "audio",
                             captions_csv=clotho_mini / "clotho_captions_mini.csv", split="evaluation", workers=2)
    assert [(r.split, r.clips, r.captions, r.errors) for r in reports] == [("evaluation", 7, 35, [])]
    manifest = read_manifest(tmp_path / "evaluation")
    assert len(manifest) == 7 and len(manifest.pairs()) == 35
    with open(clotho_mini / "clotho_captions_mini.csv", encoding="utf-8", newline="") as f:
        table = {row["file_name"]: [row[f"caption_{i}"] for i in range(1, 6)] for row in csv.DictReader(f)}
    assert manifest.captions == table  # original text, original order
    for entry in manifest.audio:
        ref = sf.info(entry.path)
        assert Path(entry.path).is_absolute() and Path(entry.path).name == entry.audio_id
        assert abs(entry.duration - ref.frames / ref.samplerate) < 0.01
        assert (entry.sample_rate, entry.channels) == (44100, 1)
    assert (tmp_path / "evaluation" / "errors.csv").read_text() == "path,reason\n"


def make_bad_corpus(root: Path) -> dict[str, str]:
    """A Clotho-layout root whose development split holds good and bad files; returns bad name -> reason."""
    audio = root / "clotho_audio_development"
    audio.mkdir(parents=True)
    sf.write(audio / "good, one.wav", tone(16000, 1.0), 16000)
    sf.write(audio / "hi 96k 6ch.wav", tone(96000, 0.5, channels=6), 96000, subtype="PCM_24")
    sf.write(audio / "eight bit.wav", tone(8000, 0.5), 8000, subtype="PCM_U8")
    data = (audio / "good, one.wav").read_bytes()
    (audio / "truncated.wav").write_bytes(data[:30])
    (audio / "zero.wav").write_bytes(b"")
    (audio / "text.wav").write_text("not audio at all\n")
    nan = tone(16000, 0.5)
    nan[10] = np.nan
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(audio / "no captions.wav", tone(16000, 0.5), 16000)
    rows = [[name, *caps(name)] for name in
            ["good, one.wav", "hi 96k 6ch.wav", "eight bit.wav", "truncated.wav", "zero.wav", "text.wav",
             "nan.wav", "gone.wav"]]
    rows[0][3] = "  "  # an empty caption cell: dropped, clip kept
    rows.append(["no captions.wav", "", "", "", "", ""])
    write_table(root / "clotho_captions_development.csv", rows)
    return {"truncated.wav": "not a readable audio file", "zero.wav": "empty file", "text.wav": "not a readable",
            "nan.wav": "non-finite", "gone.wav": "file not found", "no captions.wav": "no non-empty caption"}


def test_bad_files_are_reported_and_good_ones_prepared(tmp_path: Path) -> None:
    bad = make_bad_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="clotho_captions_validation.csv: caption table not found"):
        prepare_clotho(out, root=tmp_path / "corpus", splits="development,validation")  # no validation here
    assert not out.exists()  # every table is read before anything is written
    (report,) = prepare_clotho(out, root=tmp_path / "corpus", splits="development", workers=2)
    assert {Path(p).name: r for p, r in report.errors}.keys() == bad.keys()
    for path, reason in report.errors:
        assert bad[Path(path).name] in reason, (path, reason)
    manifest = read_manifest(out / "development")
    assert manifest.ids == ["good, one.wav", "hi 96k 6ch.wav", "eight bit.wav"]
    assert manifest.entry("hi 96k 6ch.wav").channels == 6 and manifest.entry("hi 96k 6ch.wav").sample_rate == 96000
    assert manifest.entry("eight bit.wav").duration == pytest.approx(0.5)
    assert len(manifest.captions["good, one.wav"]) == 4 and report.dropped  # empty cell dropped and noted
    assert "caption_3" in report.dropped[0] and "line 2" in report.dropped[0]
    with open(out / "development" / "errors.csv", encoding="utf-8", newline="") as f:
        listed = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert listed == {Path(p).name: r for p, r in report.errors}
    assert sorted(manifest.errors) == sorted(report.errors)


def test_clotho_cli_reports_bad_files(tmp_path: Path) -> None:
    bad = make_bad_corpus(tmp_path / "corpus")
    run = subprocess.run([sys.executable, "-m", "corpus.prepare", "clotho", "--root", str(tmp_path / "corpus"),
                          "--splits", "development", "--out", str(tmp_path / "out"), "--workers", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "3 clips" in run.stdout and all(name in run.stdout for name in bad)
    assert read_manifest(tmp_path / "out" / "development").ids[0] == "good, one.wav"


def test_short_click_is_prepared_and_empty_file_refused(tmp_path: Path) -> None:
    """A 0.044 s click (a drum hit, a clap) is a clip like any other; a file without samples is not."""
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(1929) / 44100
    sf.write(audio / "click.wav", (0.8 * np.exp(-t / 0.01) * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
             44100, subtype="PCM_16")
    sf.write(audio / "hum.wav", tone(16000, 1.0), 16000)
    sf.write(audio / "empty.wav", np.zeros(0, np.float32), 16000)
    write_table(tmp_path / "captions.csv", [[n, *caps(n)] for n in ("click.wav", "hum.wav", "empty.wav")])
    (report,) = prepare_clotho(tmp_path / "out", audio_dir=audio, captions_csv=tmp_path / "captions.csv",
                               split="dev", workers=1)
    manifest = read_manifest(tmp_path / "out" / "dev")
    assert manifest.ids == ["click.wav", "hum.wav"]
    assert manifest.entry("click.wav").duration == pytest.approx(1929 / 44100, abs=1e-6)  # the real duration
    assert [(Path(p).name, r) for p, r in report.errors] == [("empty.wav", "no samples (header only)")]
    # a minimum asked for is still applied, and the message tells the durations apart
    (report,) = prepare_clotho(tmp_path / "out2", audio_dir=audio, captions_csv=tmp_path / "captions.csv",
                               split="dev", workers=1, min_duration=0.05)
    assert dict((Path(p).name, r) for p, r in report.errors)["click.wav"] == \
        "too short: 0.0437 s < min_duration 0.05 s"


@pytest.mark.parametrize("content, message", [
    (None, "caption table not found"),
    ("name,caption_1\nx.wav,hello\n", "row 1: wrong header"),
    ("file_name,caption_1,caption_3\nx.wav,a,b\n", "row 1: wrong header"),
    ("file_name,caption_1,caption_2\nx.wav,a,b\ny.wav,a\n", "line 3: 2 fields, expected 3"),
    ("file_name,caption_1\nx.wav,a\nx.wav,b\n", "line 3: duplicate file_name"),
])
def test_broken_caption_table_stops_before_writing(tmp_path: Path, content: str | None, message: str) -> None:
    (tmp_path / "audio").mkdir()
    table = tmp_path / "captions.csv"
    if content is not None:
        table.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as err:
        prepare_clotho(tmp_path / "out", audio_dir=tmp_path / "audio", captions_csv=table, split="dev")
    assert str(table) in str(err.value)
    assert not (tmp_path / "out").exists()


def write_synth_layout(root: Path, seed: int = 5) -> dict[str, dict[str, dict]]:
    """A synthetic corpus in Clotho's layout with tones for audio: two clips per split (the development split's
    second one an empty file), their settings and scene metadata. Returns split -> file name -> scene."""
    root.mkdir(parents=True)
    (root / "synth_corpus.json").write_text(json.dumps({"generator": "corpus.synth", "seed": seed}))
    scenes: dict[str, dict[str, dict]] = {}
    for k, split in enumerate(("development", "validation", "evaluation")):
        audio = root / f"clotho_audio_{split}"
        audio.mkdir()
        names = [f"synth_{2 * k:06d}.wav", f"synth_{2 * k + 1:06d}.wav"]
        sf.write(audio / names[0], tone(16000, 0.5), 16000)
        if split == "development":
            (audio / names[1]).write_bytes(b"")
        else:
            sf.write(audio / names[1], tone(16000, 0.5), 16000)
        write_table(root / f"clotho_captions_{split}.csv", [[n, *caps(n)] for n in names])
        scenes[split] = {n: sample_scene(np.random.default_rng([seed, 2 * k + i])) for i, n in enumerate(names)}
        (root / f"synth_metadata_{split}.json").write_text(json.dumps(scenes[split]))
    return scenes


def test_synth_layout_prepares_three_splits_with_questions(tmp_path: Path) -> None:
    root, out = tmp_path / "synth", tmp_path / "out"
    scenes = write_synth_layout(root)
    reports = prepare_synth(out, root=root, workers=1)
    assert [(r.split, r.clips, r.captions) for r in reports] == [
        ("development", 1, 5), ("validation", 2, 10), ("evaluation", 2, 10)]
    for report in reports:
        manifest = read_manifest(out / report.split)
        qa = read_qa(out / report.split)
        assert list(qa) == manifest.ids == list(manifest.captions)  # the empty file is in neither
        assert qa == {name: clip_questions(5, int(name[6:12]), scenes[report.split][name]) for name in qa}
        assert manifest.labels == {name: scene_labels(scenes[report.split][name]) for name in qa}
        assert all(labels and set(labels) <= set(LABELS) for labels in manifest.labels.values())
        assert report.questions == sum(map(len, qa.values())) >= 2 * len(qa)
        assert f"{report.questions} questions" in report.summary()
    with pytest.raises(ValueError, match="no synthetic corpus"):
        prepare_synth(tmp_path / "out2", root=tmp_path / "absent")


def test_synth_without_metadata_stops_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    scenes = write_synth_layout(root)
    meta = root / "synth_metadata_evaluation.json"
    meta.write_text(json.dumps(dict(list(scenes["evaluation"].items())[:1])))
    with pytest.raises(ValueError, match=r"synth_metadata_evaluation.json: no scene for 1 clip.*synth_000005.wav"):
        prepare_synth(tmp_path / "out", root=root, workers=1)
    meta.unlink()
    with pytest.raises(ValueError, match=r"synth_metadata_evaluation.json: missing; .*python -m corpus.synth"):
        prepare_synth(tmp_path / "out", root=root, workers=1)
    (root / "synth_corpus.json").unlink()
    with pytest.raises(ValueError, match=r"synth_corpus.json: missing"):
        prepare_synth(tmp_path / "out", root=root, workers=1)
    assert not (tmp_path / "out").exists()


# --- AudioCaps --------------------------------------------------------------------------------------------------

def test_audiocaps_finds_downloader_names_and_counts_missing(tmp_path: Path) -> None:
    ids = {  # youtube id -> (start_time, file name on disk or None)
        "vfY_TJq7n_U": (130, "vfY_TJq7n_U.wav"),
        "-0DLPzsiXXE": (30, "Y-0DLPzsiXXE.flac"),
        "Yab_cd-EF12": (0, "Yab_cd-EF12_0.wav"),  # an id that itself starts with Y
        "tw76HGONaKg": (570, "tw76HGONaKg_570000_580000.ogg"),  # milliseconds
        "a1b2c3d4e5f": (20, "a1b2c3d4e5f_20.000_30.000.wav"),
        "zzzzzzzzzzz": (40, None),  # never downloaded
        "qqqqqqqqqqq": (50, "qqqqqqqqqqq_60.wav"),  # another segment of the video: not this clip
    }
    audio = tmp_path / "audio" / "sub"
    audio.mkdir(parents=True)
    for name in [n for _, n in ids.values() if n]:
        fmt = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}[name.rsplit(".", 1)[1]]
        sf.write(audio / name, tone(16000, 1.0), 16000, format=fmt)
    rows = [[str(1000 + 10 * k + j), yid, str(start), f"{yid} says {j}"]
            for k, (yid, (start, _)) in enumerate(ids.items()) for j in range(2)]
    write_table(tmp_path / "train.csv", rows, header=["audiocap_id", "youtube_id", "start_time", "caption"])
    write_table(tmp_path / "audiocaps_v2_val.csv", rows[:2], header=["audiocap_id", "youtube_id", "start_time",
                                                                     "caption"])
    reports = prepare_audiocaps(tmp_path / "out", csv_dir=tmp_path, audio_dir=tmp_path / "audio",
                                splits="train,val", workers=2)
    train, val = reports
    assert (train.clips, train.captions, train.errors) == (5, 10, [])
    assert sorted(a for a, _ in train.missing) == ["qqqqqqqqqqq", "zzzzzzzzzzz"]
    manifest = read_manifest(tmp_path / "out" / "train")
    assert manifest.ids == [y for y, (_, n) in ids.items() if n and y != "qqqqqqqqqqq"]
    assert manifest.captions["tw76HGONaKg"] == ["tw76HGONaKg says 0", "tw76HGONaKg says 1"]
    assert Path(manifest.entry("Yab_cd-EF12").path).name == "Yab_cd-EF12_0.wav"
    with open(tmp_path / "out" / "train" / "missing.csv", newline="") as f:
        assert sorted(tuple(r) for r in csv.reader(f)) == [
            ("audio_id", "start_time"), ("qqqqqqqqqqq", "50"), ("zzzzzzzzzzz", "40")]
    assert (val.clips, val.missing) == (1, [])
    with pytest.raises(ValueError, match="no AudioCaps caption table for split 'test'"):
        prepare_audiocaps(tmp_path / "out", csv_dir=tmp_path, audio_dir=tmp_path / "audio", splits="test")


def test_audiocaps_real_table_header(real_captions: Path, tmp_path: Path) -> None:
    """The real v2 tables parse: val has 495 clips with 5 captions each (all absent on disk here)."""
    (tmp_path / "audio").mkdir()
    (report,) = prepare_audiocaps(tmp_path / "out", csv_dir=real_captions, audio_dir=tmp_path / "audio",
                                  splits="val", workers=1)
    assert (report.clips, len(report.missing)) == (0, 495)


# --- manifest I/O -----------------------------------------------------------------------------------------------

def test_manifest_round_trip_with_awkward_ids(tmp_path: Path) -> None:
    ids = ["plain", "with space.wav", 'comma, and "quote".wav', "ünïcödé, 音.flac", "new\nline"]
    manifest = Manifest(
        split="dev",
        audio=[AudioEntry(i, str(tmp_path / f"{k}.wav"), 1.5 + k, 16000, 1 + k % 2) for k, i in enumerate(ids)],
        captions={i: [f"a caption for {i}", "second, with comma"] for i in ids[:-1]},
        errors=[("/x/bad, file.wav", "empty file (0 bytes)")],
        labels={ids[0]: ["dog", "rain, heavy"], ids[3]: ["音"]})
    split_dir = write_manifest(manifest, tmp_path / "out")
    assert split_dir == tmp_path / "out" / "dev"
    back = read_manifest(split_dir)
    assert back == manifest
    assert back.uncaptioned == ["new\nline"] and back.pairs()[:2] == [
        ("plain", "a caption for plain"), ("plain", "second, with comma")]
    assert "ünïcödé" in (split_dir / "captions.json").read_text(encoding="utf-8")  # UTF-8, not escaped
    assert not list(split_dir.glob(".*tmp*"))  # no temporary files left behind
    manifest.labels = {}
    assert read_manifest(write_manifest(manifest, tmp_path / "out")).labels == {}  # old labels do not linger


def test_several_splits_read_as_one(tmp_path: Path) -> None:
    a = write_manifest(Manifest("a", [AudioEntry("x", "/x.wav", 1.0, 16000, 1)], {"x": ["a cap"]}), tmp_path)
    b = write_manifest(Manifest("b", [AudioEntry("y", "/y.wav", 2.0, 16000, 1)], {"y": ["b cap"]},
                                labels={"y": ["dog"]}), tmp_path)
    both = read_manifests(f"{a},{b}")
    assert both.split == "a+b" and both.ids == ["x", "y"] and both.captions == {"x": ["a cap"], "y": ["b cap"]}
    assert both.labels == {"y": ["dog"]} and read_manifests(str(a)) == read_manifest(a)
    with pytest.raises(ValueError, match=r"audio id 'x' is in both .*a and .*a"):
        read_manifests(f"{a},{a}")


def test_read_manifest_refuses_broken_splits(tmp_path: Path) -> None:
    manifest = Manifest("dev", [AudioEntry("a", "/a.wav", 1.0, 16000, 1)], {"a": ["x"]})
    split_dir = write_manifest(manifest, tmp_path)
    (split_dir / "split.json").unlink()  # a split made by hand: its files' own checks
    (split_dir / "captions.json").write_text(json.dumps({"a": ["x"], "b": ["y"]}))
    with pytest.raises(ValueError, match="not in wav.csv"):
        read_manifest(split_dir)
    (split_dir / "captions.json").write_text(json.dumps({"a": [""]}))
    with pytest.raises(ValueError, match="non-empty strings"):
        read_manifest(split_dir)
    (split_dir / "wav.csv").write_text("audio_id,path,duration\na,/a.wav,1.0\n")
    with pytest.raises(ValueError, match=r"wav.csv: missing columns \['sample_rate', 'channels'\]"):
        read_manifest(split_dir)
    (split_dir / "wav.csv").unlink()
    with pytest.raises(ValueError, match="wav.csv: missing"):
        read_manifest(split_dir)
    with pytest.raises(ValueError, match="duplicate audio_id"):
        write_manifest(Manifest("d", [manifest.audio[0], manifest.audio[0]], {}), tmp_path)
    for labels, message in [({"b": ["dog"]}, "labels for 1 audio ids not in wav.csv"),
                            ({"a": ["dog", " "]}, "labels of 'a' must be a list of non-empty strings"),
                            ({"a": ["dog", "dog"]}, "labels of 'a' must be distinct"), ({"a": []}, "at least one")]:
        with pytest.raises(ValueError, match=message):
            write_manifest(Manifest("d", manifest.audio, {}, labels=labels), tmp_path)


def test_clotho_resplit_is_seeded_disjoint_and_recorded(tmp_path: Path) -> None:
    """The SJTU report's 9:1 re-split of development + validation: the same seed gives the same split, every clip
    lands in exactly one split, and the evaluation split is untouched."""
    root = tmp_path / "corpus"
    names = {"development": [f"dev_{i:02d}.wav" for i in range(14)], "validation": [f"val_{i}.wav" for i in range(6)],
             "evaluation": ["eval_0.wav", "eval_1.wav"]}
    for split, files in names.items():
        (root / f"clotho_audio_{split}").mkdir(parents=True)
        for name in files:
            sf.write(root / f"clotho_audio_{split}" / name, tone(16000, 0.2), 16000)
        write_table(root / f"clotho_captions_{split}.csv", [[n, *caps(n)] for n in files])
    first = prepare_clotho(tmp_path / "a", root=root, resplit=0.9, seed=3, workers=1)
    again = prepare_clotho(tmp_path / "b", root=root, resplit=0.9, seed=3, workers=1)
    other = prepare_clotho(tmp_path / "c", root=root, resplit=0.9, seed=4, workers=1)
    assert [(r.split, r.clips) for r in first] == [("development", 18), ("validation", 2), ("evaluation", 2)]
    dev, val = (set(read_manifest(tmp_path / "a" / s).ids) for s in ("development", "validation"))
    assert not dev & val and dev | val == set(names["development"] + names["validation"])
    assert set(read_manifest(tmp_path / "a" / "evaluation").ids) == set(names["evaluation"])
    record = json.loads((tmp_path / "a" / "resplit.json").read_text())
    assert record["share"] == 0.9 and record["seed"] == 3 and set(record["validation"]) == val
    assert (tmp_path / "b" / "resplit.json").read_text() == (tmp_path / "a" / "resplit.json").read_text()
    assert set(read_manifest(tmp_path / "c" / "validation").ids) != val  # another seed, another split
    assert read_manifest(tmp_path / "a" / "validation").captions[sorted(val)[0]] == caps(sorted(val)[0])
    assert [r.clips for r in again] == [18, 2, 2] and [r.clips for r in other] == [18, 2, 2]
    with pytest.raises(ValueError, match="expected a fraction in"):
        prepare_clotho(tmp_path / "d", root=root, resplit=1.5)


def test_macs_prepares_captions_with_tags_and_names_bad_entries(tmp_path: Path) -> None:
    audio = tmp_path / "TAU-urban-acoustic-scenes-2019-development" / "audio"
    audio.mkdir(parents=True)
    for name in ("street_traffic-milan-1018-40788-a.wav", "park-helsinki-240-6734-a.wav", "metro-lyon-1-2-a.wav"):
        sf.write(audio / name, tone(48000, 0.3), 48000)
    (audio / "metro-lyon-1-2-a.wav").write_bytes(b"RIFF broken")
    annotations = {"files": [
        {"filename": "street_traffic-milan-1018-40788-a.wav", "annotations": [
            {"annotator_id": 133, "sentence": "Cars pass by on a busy street.", "tags": ["car", "traffic"]},
            {"annotator_id": 7, "sentence": "  ", "tags": ["engine"]},
            {"annotator_id": 9, "sentence": "Traffic noise and a horn.", "tags": ["car", "horn"]}]},
        {"filename": "park-helsinki-240-6734-a.wav", "annotations": [
            {"annotator_id": 1, "sentence": "Birds sing in a park.", "tags": ["birds"]}]},
        {"filename": "metro-lyon-1-2-a.wav", "annotations": [
            {"annotator_id": 2, "sentence": "A train arrives.", "tags": []}]},
        {"filename": "tram-vienna-5-6-a.wav", "annotations": [{"annotator_id": 3, "sentence": "", "tags": []}]},
    ]}
    macs_yaml = tmp_path / "MACS.yaml"
    macs_yaml.write_text(yaml.safe_dump(annotations), encoding="utf-8")
    (report,) = prepare_macs(tmp_path / "out", yaml_path=macs_yaml, audio_dir=audio, workers=1)
    assert (report.split, report.clips, report.captions, report.labelled) == ("train", 2, 3, 2)
    manifest = read_manifest(tmp_path / "out" / "train")
    assert manifest.captions["street_traffic-milan-1018-40788-a.wav"] == ["Cars pass by on a busy street.",
                                                                          "Traffic noise and a horn."]
    assert manifest.labels["street_traffic-milan-1018-40788-a.wav"] == ["car", "engine", "horn", "traffic"]
    reasons = dict(report.errors)
    assert any("metro-lyon-1-2-a.wav" in path for path in reasons)  # unreadable audio, reported
    assert "no non-empty sentence (" in reasons[str((audio / "tram-vienna-5-6-a.wav").resolve())]
    assert any("annotations[1]" in note for note in report.dropped)

    for text, message in [("files: [{annotations: []}]", r"files\[0\]: no filename"),
                          ("files: {a: 1}", "expected a top-level 'files' list"),
                          ("files: [{filename: a.wav}, {filename: a.wav}]", r"files\[1\]: duplicate filename"),
                          ("files: [{filename: a.wav, annotations: [{sentence: x, tags: 3}]}]", "'tags' must be"),
                          ("files: [", "not a YAML file")]:
        macs_yaml.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            prepare_macs(tmp_path / "bad", yaml_path=macs_yaml, audio_dir=audio)


def test_a_split_is_written_as_one_unit_and_disagreeing_files_are_refused(tmp_path: Path, small_disk) -> None:
    """A preparation stopped half-way (a full disk, a kill) leaves the previous split whole; a split whose clip list
    and captions come from different preparations is refused."""
    old = Manifest("dev", [AudioEntry(f"c{i}", f"/c{i}.wav", 1.0, 16000, 1) for i in range(3)],
                   {f"c{i}": [f"old caption {i}"] for i in range(3)})
    split_dir = write_manifest(old, small_disk.path)
    new = Manifest("dev", [AudioEntry(f"c{i}", f"/c{i}.wav", 1.0, 16000, 1) for i in range(300)],
                   {f"c{i}": [f"a new and much longer caption number {i} " * 20] for i in range(300)})
    small_disk.fill(leave=64 << 10)
    with pytest.raises(OSError, match=rf"No space left on tmpfs \(mounted at {small_disk.path}\)"):
        write_manifest(new, small_disk.path)
    assert read_manifest(split_dir) == old
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["dev", "filler"]
    small_disk.free()
    # the red team's case: a new clip list beside the old captions (as a writer of one file at a time left it)
    other = write_manifest(Manifest("dev", new.audio[:45], {i: ["x"] for i in new.ids[:45]}), tmp_path / "other")
    (split_dir / "wav.csv").write_bytes((other / "wav.csv").read_bytes())
    with pytest.raises(ValueError, match=r"dev/wav\.csv: differs from what split\.json records"):
        read_manifest(split_dir)


def test_wordless_captions_are_listed_in_errors(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(audio / name, np.full(1600, 0.1, np.float32), 16000)
    table = tmp_path / "captions.csv"
    table.write_text("file_name,caption_1,caption_2\na.wav,A dog barks.,\"...\"\nb.wav,?!,--\n", encoding="utf-8")
    (report,) = prepare_clotho(tmp_path / "out", audio_dir=audio, captions_csv=table, split="dev", workers=1)
    manifest = read_manifest(report.out_dir)
    assert manifest.ids == ["a.wav"] and manifest.captions == {"a.wav": ["A dog barks."]}
    reasons = {(Path(path).name, reason) for path, reason in manifest.errors}
    assert ("a.wav", "caption '...' has no words (punctuation only): dropped") in reasons
    assert ("b.wav", "no caption with a word: every caption is punctuation only") in reasons
