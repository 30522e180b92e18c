"""Dropout with a cheaper random mask on CPUs.

torch's CPU dropout draws a random number per element through its Bernoulli sampler, a tenth of the main job's
training time (``benchmarks/bench_dropout.py``). This draws one random byte per element (eight from each 64-bit
draw of the same torch generator) and keeps an element when its byte is below ``round(256 * (1 - p))``: the rate is
``p`` rounded to a multiple of 1/256 (0.2 -> 0.199, 0.1 -> 0.102; 0.5 exact), and the kept values are scaled by the
exact inverse of the kept share, so the expectation is unchanged. The masks follow torch's seed, so a resumed run
still ends with the same weights. Other devices, and rates that round to 0 or 1, use torch's own dropout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with a byte mask on CPUs (see the module docstring)."""
    if not training or p <= 0:
        return x
    keep = round(256 * (1 - p))
    if x.device.type != "cpu" or not 0 < keep < 256:
        return F.dropout(x, p, training)
    n = x.numel()
    draws = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-(2 ** 63), 2 ** 63 - 1)
    kept = draws.view(torch.uint8)[:n].view(x.shape) < keep
    return x * kept.to(x.dtype).mul_(256 / keep)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s mask."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` inside ``module`` by :class:`Dropout` of the same rate (in place); returns it.
    (Dropout computed inside other torch modules, as attention-weight dropout and a GRU's between its layers, stays
    torch's.)"""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, Dropout(child.p))
        else:
            use_fast_dropout(child)
    return module
