"""DDP on the GPUs there are, with NCCL: two processes where two GPUs exist (each on its own GPU, negatives gathered
from both), one where there is one; the training ends as one process's does on the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retrieval.train import train
from tests.gpu.conftest import DEVICE
from tests.retrieval.conftest import _tiny_settings

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]


def test_ddp_training_on_the_gpus_matches_one_process(tiny_corpus, tmp_path):
    processes = min(2, torch.cuda.device_count()) if DEVICE == "cuda" else 2  # the dry run: two CPU processes (gloo)
    settings = _tiny_settings(tiny_corpus, tmp_path / "ddp", **{"train.epochs": 2, "data.val_manifest": "",
                                                                "train.device": DEVICE})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "retrieval.train", *[a for k, v in settings.items() for a in (f"--{k}", str(v))]]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()]
    single = train(None, {**settings, "exp_dir": str(tmp_path / "single")})["history"][-1]
    assert len(ddp) == 2 and (tmp_path / "ddp" / "last.pt").is_file()
    # same global batches; only dropout masks differ between the runs (each process draws its own)
    assert ddp[-1]["train_loss"] == pytest.approx(single["train_loss"], rel=0.05)
