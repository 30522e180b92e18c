import random
from pathlib import Path

import numpy as np
import pytest
import torch

from common.run import commit_run
from common import (checkpoint_paths, load_checkpoint, load_config, open_run, rng_state, save_checkpoint, set_rng_state,
                    write_history)

DEFAULTS = {"epochs": 3, "lr": 1e-3, "name": "cnn14", "layers": [1, 2], "model": {"width": 0.5, "pool": None}}


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nmodel:\n  width: 1\n")
    config = load_config(DEFAULTS, path, {"lr": 2, "model.pool": "mean"})
    assert config == {"epochs": 5, "lr": 2.0, "name": "cnn14", "layers": [1, 2],
                      "model": {"width": 1.0, "pool": "mean"}}
    assert DEFAULTS["epochs"] == 3  # defaults untouched


def test_config_rejects_unknown_key_and_wrong_type(tmp_path):
    with pytest.raises(KeyError, match="unknown setting 'model.widht'.*model.width"):
        load_config(DEFAULTS, None, {"model.widht": 2})
    with pytest.raises(ValueError, match="'epochs' expects int"):
        load_config(DEFAULTS, None, {"epochs": "many"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping"):
        load_config(DEFAULTS, bad)
    with pytest.raises(ValueError, match="missing.yaml: config file not found"):
        load_config(DEFAULTS, tmp_path / "missing.yaml")


def test_checkpoint_round_trip_and_foreign_files(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"kind": "captioner", "model_args": {"d": 2}, "state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_checkpoint(path, kind="captioner")["state_dict"]["w"], torch.ones(2))
    with pytest.raises(ValueError, match="is a 'captioner' checkpoint, expected 'retrieval'"):
        load_checkpoint(path, kind="retrieval")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "panns.pth")
    with pytest.raises(ValueError, match="not a project checkpoint"):
        load_checkpoint(tmp_path / "panns.pth")


def test_checkpoint_paths():
    assert checkpoint_paths("a.pt, b.pt") == ["a.pt", "b.pt"]
    assert checkpoint_paths(["a.pt", Path("dir/b.pt")]) == ["a.pt", "dir/b.pt"]
    for bad in ["", "a.pt,", [], ["a.pt", ""]]:
        with pytest.raises(ValueError, match="Invalid captioners"):
            checkpoint_paths(bad, "captioners")


def test_rng_state_survives_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint({"kind": "x", "state_dict": {}, "rng": rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_run_folder_refuses_other_config(tmp_path):
    open_run(tmp_path / "exp", DEFAULTS, "retrieval.train").info("hello")
    assert "hello" in (tmp_path / "exp" / "train.log").read_text()
    open_run(tmp_path / "exp", DEFAULTS, "retrieval.train")  # same config: fine
    assert not (tmp_path / "exp" / "config.yaml").exists()  # written when training starts (commit_run)
    commit_run(tmp_path / "exp", DEFAULTS, "retrieval.train")
    with pytest.raises(ValueError, match="different configuration.*seed"):
        open_run(tmp_path / "exp", {**DEFAULTS, "seed": 9}, "retrieval.train")
    write_history(tmp_path / "exp", [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    assert (tmp_path / "exp" / "curves.png").stat().st_size > 1000
