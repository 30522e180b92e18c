"""Label-only corpora in their real layouts (ESC-50, UrbanSound8K, FSD50K, a label CSV), made here with generated
audio, prepared into manifests with labels.json; bad tables stop with the file and line named."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from corpus.prepare import prepare_labelled, prepare_split
from corpus.labelled import read_label_csv
from features.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]


def tone(path: Path, seconds: float = 0.5, rate: int = 16000, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t), rate)


def make_esc50(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """ESC-50's layout: meta/esc50.csv (its real header) and audio/<filename>."""
    (root / "meta").mkdir(parents=True)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for k, (name, fold, category) in enumerate(rows):
        lines.append(f"{name},{fold},{k},{category},False,{100 + k},A")
        tone(root / "audio" / name, freq=200 + 100 * k)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_esc50_folds_with_labels_as_words(tmp_path):
    root = make_esc50(tmp_path / "ESC-50", [("1-100-A-0.wav", "1", "dog"), ("1-101-A-1.wav", "1", "chirping_birds"),
                                            ("2-102-A-0.wav", "2", "dog")])
    (root / "audio" / "2-102-A-0.wav").write_bytes(b"")  # a broken file is reported, the rest prepared
    reports = prepare_labelled("esc50", tmp_path / "out", root=root, workers=1)
    assert [(r.split, r.clips, r.labelled) for r in reports] == [("fold1", 2, 2), ("fold2", 0, 0)]
    fold1 = read_manifest(tmp_path / "out" / "fold1")
    assert fold1.labels == {"1-100-A-0.wav": ["dog"], "1-101-A-1.wav": ["chirping birds"]}
    assert fold1.captions == {} and fold1.uncaptioned == fold1.ids  # label-only: captions come later
    assert len(reports[1].errors) == 1 and "2-102-A-0.wav" in reports[1].errors[0][0]
    assert "2 labelled" in reports[0].summary()


def test_urbansound8k_and_fsd50k_layouts(tmp_path):
    us = tmp_path / "UrbanSound8K"
    (us / "metadata").mkdir(parents=True)
    (us / "metadata" / "UrbanSound8K.csv").write_text(
        "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
        "100032-3-0-0.wav,100032,0.0,0.3,1,5,3,dog_bark\n"
        "100263-2-0-117.wav,100263,58.5,62.5,1,10,2,children_playing\n", encoding="utf-8")
    tone(us / "audio" / "fold5" / "100032-3-0-0.wav")
    tone(us / "audio" / "fold10" / "100263-2-0-117.wav")
    reports = prepare_labelled("urbansound8k", tmp_path / "us", root=us, workers=1)
    assert [(r.split, r.clips) for r in reports] == [("fold5", 1), ("fold10", 1)]  # folds without clips: none
    assert read_manifest(tmp_path / "us" / "fold10").labels == {"100263-2-0-117.wav": ["children playing"]}

    fsd = tmp_path / "FSD50K"
    (fsd / "FSD50K.ground_truth").mkdir(parents=True)
    (fsd / "FSD50K.ground_truth" / "dev.csv").write_text(
        'fname,labels,mids,split\n64760,"Electric_guitar,Guitar,Music","/m/02sgy,/m/0342h,/m/04rlf",train\n'
        '16399,"Drill,Tools","/m/01d380,/m/07k1x",val\n', encoding="utf-8")
    (fsd / "FSD50K.ground_truth" / "eval.csv").write_text('fname,labels,mids\n37199,"Bark,Dog","/m/05tny_,/m/0bt9lr"\n',
                                                           encoding="utf-8")
    for folder, name in [("FSD50K.dev_audio", "64760"), ("FSD50K.dev_audio", "16399"), ("FSD50K.eval_audio", "37199")]:
        tone(fsd / folder / f"{name}.wav")
    reports = prepare_labelled("fsd50k", tmp_path / "fsd", root=fsd, workers=1)
    assert [(r.split, r.clips) for r in reports] == [("train", 1), ("val", 1), ("eval", 1)]
    assert read_manifest(tmp_path / "fsd" / "train").labels == {"64760.wav": ["Electric guitar", "Guitar", "Music"]}


@pytest.mark.parametrize("table, message", [
    ("file_name,labels\na.wav,dog;rain\nb.wav,\n", r"labels.csv, line 3: an empty label"),
    ("file_name,labels\na.wav,dog;;rain\n", r"labels.csv, line 2: an empty label"),
    ("file_name,labels\na.wav,dog\na.wav,cat\n", r"labels.csv, line 3: 'a.wav' is listed twice \(first at .*line 2\)"),
    ("file_name,tags\na.wav,dog\n", r"labels.csv: missing columns \['labels'\]"),
])
def test_bad_label_tables_name_the_file_and_row(tmp_path, table, message):
    (tmp_path / "labels.csv").write_text(table, encoding="utf-8")
    (tmp_path / "audio").mkdir()
    with pytest.raises(ValueError, match=message):
        read_label_csv(tmp_path / "audio", tmp_path / "labels.csv", "mine")


def test_unknown_fold_and_missing_folders_are_refused(tmp_path):
    root = make_esc50(tmp_path / "ESC-50", [("1-100-A-0.wav", "7", "dog")])
    with pytest.raises(ValueError, match=r"esc50.csv, line 2: unknown fold '7' \(expected 1 to 5\)"):
        prepare_labelled("esc50", tmp_path / "out", root=root)
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(ValueError, match=r"absent: esc50 root not found"):
        prepare_labelled("esc50", tmp_path / "out", root=tmp_path / "absent")
    (tmp_path / "labels.csv").write_text("file_name,labels\na.wav,dog\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"audio: audio folder not found \(listed by .*labels.csv\)"):
        read_label_csv(tmp_path / "audio", tmp_path / "labels.csv", "x")


def test_label_csv_command_prepares_a_labelled_split(tmp_path):
    tone(tmp_path / "clips" / "sub" / "a b.wav")
    tone(tmp_path / "clips" / "c.flac")
    (tmp_path / "labels.csv").write_text('file_name,labels\nsub/a b.wav,dog; rain\nc.flac,"siren"\n',
                                         encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "corpus.prepare", "labels", "--audio-dir", str(tmp_path / "clips"),
                           "--labels-csv", str(tmp_path / "labels.csv"), "--split", "mine", "--out",
                           str(tmp_path / "out"), "--workers", "1"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[mine] 2 clips, 0 captions, 2 labelled" in done.stdout
    labels = json.loads((tmp_path / "out" / "mine" / "labels.json").read_text(encoding="utf-8"))
    assert labels == {"sub/a b.wav": ["dog", "rain"], "c.flac": ["siren"]}
    split = prepare_split(read_label_csv(tmp_path / "clips", tmp_path / "labels.csv", "again"), tmp_path / "out",
                          workers=1)
    assert split.labelled == 2
