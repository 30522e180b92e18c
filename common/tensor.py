"""Tensor helpers every stage shares: which steps of a padded batch are valid, and means over those steps only."""
from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``lengths`` (B,) -> bool (B, max_len), True on each row's first ``lengths[b]`` steps (the valid ones).

    Its negation is the padding mask torch's attention takes (``key_padding_mask``: True = ignore).
    """
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None) -> Tensor:
    """Mean of ``x`` over ``dim`` (None: over every element) counting only the positions where ``mask`` is true.

    ``mask`` is bool or 0/1, spans ``dim`` and broadcasts against ``x`` once trailing dimensions are added: e.g.
    x (B, T, D), mask (B, T), dim 1 -> (B, D); or x (B, C, T), mask (B, 1, T), dim 2 -> (B, C). Values at masked
    positions never reach the result (unless they are inf or NaN); a row without any valid position gives 0.
    """
    weights = mask.to(x.dtype)
    weights = weights.reshape(*weights.shape, *(1,) * (x.dim() - weights.dim()))  # broadcastable against x
    if dim is not None and weights.shape[dim] != x.shape[dim]:
        raise ValueError(f"Invalid mask. (expected size {x.shape[dim]} on dim {dim} like x {tuple(x.shape)}, "
                         f"found shape {tuple(mask.shape)})")
    if dim is None:
        return (x * weights).sum() / weights.expand_as(x).sum().clamp(min=1.0)
    return (x * weights).sum(dim) / weights.sum(dim).clamp(min=1.0)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters live (the CPU for a module without any, and for a network that torch does not
    run, such as ONNX Runtime's)."""
    parameters = module.parameters() if isinstance(module, torch.nn.Module) else iter(())
    return next(parameters, torch.empty(0)).device
