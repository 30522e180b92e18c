"""A refused training setting is blamed on where its value came from: the command line's ``--train.epochs 0``, or
the YAML file that set it, never the file for a value typed on the command line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.trainer import TRAIN_DEFAULTS, check_train_settings
from retrieval.train import load_config_checked


def test_setting_source():
    from common.config import setting_source

    assert setting_source("train.epochs", {"train.epochs": 0}, "x.yaml") == "command line (--train.epochs 0)"
    assert setting_source("train.batch_size", {"train.batch-size": 1}, "x.yaml") == \
        "command line (--train.batch_size 1)"  # dashes, as load_config reads them
    assert setting_source("train.epochs", {"train": {"epochs": 0}}, "x.yaml") == "command line (--train.epochs 0)"
    assert setting_source("train.schedule", {"train.schedule": "linear"}, "x.yaml") == \
        "command line (--train.schedule linear)"
    assert setting_source("train.epochs", {"train.lr": 1.0}, "x.yaml") == "x.yaml"
    assert setting_source("train.epochs", None, "config") == "config"


def test_check_train_settings_names_the_source_of_each_value():
    bad = {**TRAIN_DEFAULTS, "epochs": 0, "lr": -1.0}
    with pytest.raises(ValueError, match=r"^x\.yaml: need train\.epochs >= 1, found 0$"):
        check_train_settings(bad, "x.yaml")
    with pytest.raises(ValueError, match=r"^command line \(--train\.epochs 0\): need train\.epochs >= 1, found 0$"):
        check_train_settings(bad, "x.yaml", {"train.epochs": 0})
    with pytest.raises(ValueError, match=r"^x\.yaml: need train\.lr > 0, found -1\.0$"):
        check_train_settings({**bad, "epochs": 1}, "x.yaml", {"train.epochs": 1})


def _yaml(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"data:\n  train_manifest: somewhere\ntrain:\n  epochs: {epochs}\n", encoding="utf-8")
    return path


def test_retrieval_config_blames_the_file_or_the_command_line(tmp_path):
    path = _yaml(tmp_path, epochs=0)
    with pytest.raises(ValueError, match=rf"^{path}: need train\.epochs >= 1, found 0$"):
        load_config_checked(str(path), {})
    path = _yaml(tmp_path, epochs=5)
    with pytest.raises(ValueError, match=r"^command line \(--train\.epochs 0\): need train\.epochs >= 1"):
        load_config_checked(str(path), {"train.epochs": 0})
    with pytest.raises(ValueError, match=r"^command line \(--train\.batch_size 1\): InfoNCE needs train\.batch_size"):
        load_config_checked(str(path), {"train.batch_size": 1})


def test_the_command_blames_the_command_line(tmp_path):
    path = _yaml(tmp_path, epochs=5)
    proc = subprocess.run([sys.executable, "-m", "retrieval.train", "--config", str(path), "--train.epochs", "0"],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("retrieval.train: error: command line (--train.epochs 0): need train.epochs >= 1, "
                                   "found 0")
