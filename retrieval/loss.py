"""Symmetric InfoNCE over a batch of (audio, caption) pairs, with negatives gathered from every process.

Captions of the same clip in one batch are not negatives of each other: when two rows share an audio id, each
row's logit against the other's audio (and the other's caption) is masked out, so only its own pair is positive.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from common.distributed import all_gather_with_grad


def _gather_ids(ids: Tensor) -> Tensor:
    """Integer ids [B] from every process, concatenated in rank order (no gradient needed)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return ids
    out = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(out, ids.contiguous())
    return torch.cat(out)


def info_nce(audio: Tensor, text: Tensor, audio_ids: Tensor, temperature: Tensor, gather: bool = True) -> Tensor:
    """Symmetric InfoNCE loss of this process's rows against the pairs of all processes.

    Args:
        audio: L2-normalised audio embeddings [B, E] (row i pairs with ``text[i]``).
        text: L2-normalised caption embeddings [B, E].
        audio_ids: integer clip ids [B]; rows with equal ids are not negatives of each other.
        temperature: scalar tensor (> 0).
        gather: under DDP, use the pairs of all processes as negatives (False: this process's batch only).
    Returns:
        scalar loss: mean of text-to-audio and audio-to-text cross-entropies over this process's rows. Under DDP
        (equal B on every process), the average over processes of this loss is the loss of the global batch, and
        its gradients (through ``all_gather_with_grad``) are those of the global batch.
    """
    if audio.shape != text.shape or audio.dim() != 2 or audio_ids.shape != audio.shape[:1]:
        raise ValueError(f"info_nce: expected audio and text [B, E] and audio_ids [B], found {tuple(audio.shape)}, "
                         f"{tuple(text.shape)}, {tuple(audio_ids.shape)}")
    batch = audio.shape[0]
    if not gather or not dist.is_initialized():
        return _local_info_nce(audio, text, audio_ids, temperature)
    all_audio = all_gather_with_grad(audio)  # (G, E), G = B * world size
    all_text = all_gather_with_grad(text)  # (G, E)
    all_ids = _gather_ids(audio_ids)  # (G,)
    offset = dist.get_rank() * batch
    targets = torch.arange(batch, device=audio.device) + offset  # (B,) column of each row's own pair
    same_clip = audio_ids[:, None] == all_ids[None, :]  # (B, G)
    same_clip[torch.arange(batch), targets] = False  # keep the positive itself
    t2a = (text @ all_audio.T) / temperature  # (B, G)
    a2t = (audio @ all_text.T) / temperature  # (B, G)
    t2a = t2a.masked_fill(same_clip, float("-inf"))
    a2t = a2t.masked_fill(same_clip, float("-inf"))
    return 0.5 * (F.cross_entropy(t2a, targets) + F.cross_entropy(a2t, targets))


def _local_info_nce(audio: Tensor, text: Tensor, audio_ids: Tensor, temperature: Tensor) -> Tensor:
    """:func:`info_nce` within one batch [B, E] (no process group)."""
    targets = torch.arange(audio.shape[0], device=audio.device)  # (B,)
    same_clip = (audio_ids[:, None] == audio_ids[None, :]) & (targets[:, None] != targets[None, :])  # (B, B)
    t2a = (text @ audio.T / temperature).masked_fill(same_clip, float("-inf"))  # (B, B)
    a2t = (audio @ text.T / temperature).masked_fill(same_clip, float("-inf"))  # (B, B)
    return 0.5 * (F.cross_entropy(t2a, targets) + F.cross_entropy(a2t, targets))
