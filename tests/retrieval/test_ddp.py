"""Two CPU processes under torchrun (gloo): negatives gathered from both, same loss and gradients as one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.train import train

REPO = Path(__file__).resolve().parents[2]


def torchrun(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_loss_and_gradients_equal_one_process(tmp_path):
    report = tmp_path / "report.json"
    torchrun(str(REPO / "tests" / "retrieval" / "ddp_loss_check.py"), str(report))
    result = json.loads(report.read_text())
    assert result["world_size"] == 2
    assert result["ddp_loss"] == pytest.approx(result["single_loss"], rel=1e-5)
    assert result["max_grad_diff"] < 1e-4, result["worst"]  # relative to the largest gradient entry


@pytest.mark.slow
def test_ddp_training_matches_one_process(tiny_corpus, tiny_settings, tmp_path):
    settings = tiny_settings(tiny_corpus, tmp_path / "ddp", **{"train.epochs": 2, "data.val_manifest": ""})
    torchrun("-m", "retrieval.train", *[a for k, v in settings.items() for a in (f"--{k}", str(v))])
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()]
    single = train(None, {**settings, "exp_dir": str(tmp_path / "single")})["history"][-1]
    assert len(ddp) == 2 and (tmp_path / "ddp" / "last.pt").is_file()
    # same global batches; only dropout masks differ between the runs (each process draws its own)
    assert ddp[-1]["train_loss"] == pytest.approx(single["train_loss"], rel=0.05)
