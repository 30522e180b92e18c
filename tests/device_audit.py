"""Device mistakes found on a CPU: a tensor made inside a model, a loss or a search without saying where (no
``device=``) lands on the CPU, which a GPU run then fails on (``cuda`` and ``cpu`` tensors mixed) or pays for with a
copy in every step. On a CPU-only machine every tensor is on the CPU, so such a mistake passes every other test; this
records each factory call (``torch.arange``, ``zeros``, ``full``, ...) made without ``device=`` from the project's
model, loss and decoding code.

    python -m pytest -p tests.device_audit tests/captioning tests/retrieval -m "not slow" -n 0

prints the places found after the run. The tests marked ``device_audit`` (the models, encoders, losses and searches)
run under it in every run and fail on any place found (``tests/conftest.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

REPO = Path(__file__).resolve().parents[1]
FACTORIES = {torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor, torch.rand, torch.randn,
             torch.randint, torch.linspace, torch.eye, torch.as_tensor}
# Where tensors must be made on the model's device: forward passes, losses, search and sampling. Data loading and
# collation build batches on the CPU on purpose (the trainer moves them), so they are not audited.
AUDITED = ("captioning/models/", "captioning/search.py", "captioning/scst.py", "captioning/train_lm.py",
           "captioning/decode.py", "captioning/rerank.py", "retrieval/model.py", "retrieval/loss.py",
           "retrieval/embed.py", "retrieval/rerank.py", "features/encoders/", "features/melbank.py",
           "features/encode.py", "tagging/model.py", "common/text_encoder.py", "common/trainer.py")


class DeviceAudit(TorchFunctionMode):
    """Records ``(file:line, factory)`` for every factory call without ``device=`` made from audited code."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[tuple[str, str]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs and not (args and isinstance(args[0], torch.Tensor)):
            where = self._caller()
            if where is not None:
                self.found.add((where, func.__name__))
        return func(*args, **kwargs)

    @staticmethod
    def _caller() -> str | None:
        """``file:line`` of the audited project code that called, or None: outside it, or while a model is built
        (its parameters and buffers move with it) or a data item or batch is assembled (on the CPU on purpose)."""
        frame, where = sys._getframe(2), None
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if path.is_relative_to(REPO) and not path.is_relative_to(REPO / "tests"):
                name = frame.f_code.co_name
                if name in ("__init__", "__getitem__") or name.startswith("collate"):
                    return None
                if where is None:
                    relative = path.relative_to(REPO).as_posix()
                    if not relative.startswith(AUDITED):
                        return None
                    where = f"{relative}:{frame.f_lineno}"
            frame = frame.f_back
        return where


_AUDIT = DeviceAudit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _AUDIT:
        yield


def pytest_terminal_summary(terminalreporter):
    terminalreporter.section("device audit: tensors made without device= in model, loss and decoding code")
    for where, factory in sorted(_AUDIT.found):
        terminalreporter.line(f"{where}  torch.{factory}")
    if not _AUDIT.found:
        terminalreporter.line("none")
