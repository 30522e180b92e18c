"""PyTorch's own distributed engine: ``torchrun`` sets the environment, DDP does the rest (gloo on CPUs)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by ``torchrun``; return ``(rank, world_size)`` ((0, 1) otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":  # each process on its own GPU, before NCCL starts
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank(), world_size


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` [B, ...] from every process along dim 0; gradients flow back to each process's part."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)


def all_gather_object(obj):
    """Gather a picklable object from every process into a list (rank order)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_gradients(model: torch.nn.Module) -> None:
    """Average the gradients of every process (one coalesced all-reduce).

    DDP's own bucketed reducer is bypassed (the backward runs under ``no_sync``): measured with gloo on torch 2.x,
    its gradients disagree with a one-process run of the same global batch when the loss all-gathers embeddings
    (tests/retrieval/ddp_loss_check.py), while this explicit average agrees to float rounding.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_rng_states() -> list[dict]:
    """Every process's RNG state (``common.checkpoint.rng_state``), rank order. Tensors travel as numpy arrays:
    gathering tensors inside objects fails with gloo on CPU."""
    from common.checkpoint import rng_state

    state = rng_state()
    if not dist.is_initialized():
        return [state]
    state["numpy"][1], state["torch"] = state["numpy"][1].numpy(), state["torch"].numpy()
    states = all_gather_object(state)
    for s in states:
        s["numpy"][1], s["torch"] = torch.from_numpy(s["numpy"][1]), torch.from_numpy(s["torch"])
    return states
