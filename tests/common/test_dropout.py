"""The byte-mask dropout: torch's dropout in expectation, zeros at the rounded rate, the same masks for the same
seed, gradients through the kept elements only."""
import pytest
import torch
from torch import nn

from common.dropout import Dropout, dropout, use_fast_dropout


def test_rate_scale_and_seed():
    x = torch.ones(200_000)
    torch.manual_seed(0)
    a = dropout(x, 0.2)
    dropped = (a == 0).float().mean().item()
    assert dropped == pytest.approx(1 - 205 / 256, abs=0.004)  # 0.2 rounded to a multiple of 1/256
    assert torch.equal(a.unique(), torch.tensor([0.0, 256 / 205]))
    assert a.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.2), a)  # the seed decides the mask
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # rates that round to 1: torch's own
    y = torch.randn(3, 5, 7, requires_grad=True)
    out = dropout(y, 0.5)
    out.sum().backward()
    assert torch.equal(y.grad, (out != 0).float() * 2.0)


def test_use_fast_dropout_swaps_every_dropout_module_and_keeps_the_weights():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.1), nn.ReLU()))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    use_fast_dropout(model)
    assert [type(m) for m in model.modules() if isinstance(m, nn.Dropout)] == [Dropout, Dropout]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.1]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.eval()
    x = torch.randn(2, 4)
    assert torch.equal(model(x), model[2][1](model[0](x)))
