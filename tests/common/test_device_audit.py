"""The device audit (tests/device_audit.py) finds a tensor made without device= in model code, and nothing else."""
import torch

from tests.device_audit import REPO, DeviceAudit

MODEL_CODE = """
import torch

def forward(x):
    return x + torch.arange(x.shape[0])  # on the CPU whatever x's device: a mistake a GPU run finds

def forward_right(x):
    return x + torch.arange(x.shape[0], device=x.device) + torch.as_tensor(x)

class Layer:
    def __init__(self):
        self.scale = torch.ones(3)  # a parameter or buffer: it moves with the model
"""


def _as_if_in(relative: str) -> dict:
    scope: dict = {}
    exec(compile(MODEL_CODE, str(REPO / relative), "exec"), scope)
    return scope


def test_the_audit_finds_a_tensor_made_without_a_device_in_model_code_only():
    model, elsewhere = _as_if_in("captioning/models/example.py"), _as_if_in("corpus/example.py")
    audit = DeviceAudit()
    with audit:
        model["forward"](torch.zeros(3))
        model["forward_right"](torch.zeros(3))
        model["Layer"]()
        elsewhere["forward"](torch.zeros(3))  # data preparation is not audited
    assert audit.found == {("captioning/models/example.py:5", "arange")}
