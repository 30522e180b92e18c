"""The GPU suite's device: ``cuda``. ``AACTK_GPU_SUITE_DEVICE=cpu python -m pytest -m gpu`` runs the suite's code on
the CPU instead, a dry run that checks the tests themselves on a machine without a GPU (each comparison is then the
CPU against itself; fp16 training, which needs a GPU, is left out)."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = os.environ.get("AACTK_GPU_SUITE_DEVICE", "cuda")


@pytest.fixture()
def exact_fp32():
    """GPU float32 as float32: without TF32 convolutions and matrix products (cuDNN's default for convolutions),
    so that GPU results agree with the CPU's within float rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
