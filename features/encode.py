"""Encoding waveforms with a frozen audio encoder, as extraction, captioning from raw audio and search all do it.

Clips are batched by length, longest first (little padding; the longest batch comes first, so running out of memory
shows at once), and each batch is one zero-padded forward with the clips' lengths: the encoders ignore the padding,
so a clip gets the same outputs alone or in any batch. Long audio is windowed by the encoder itself, as chosen when
it was loaded (``features.weights.load_audio_encoder``'s ``chunk_seconds``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from features.encoders import AudioEncoder
from common.tensor import module_device
from features.frontend import pad_waveforms


def plan_batches(durations: Sequence[float], batch_size: int) -> list[list[int]]:
    """Indices of ``durations`` (seconds, samples, any length measure) in batches of ``batch_size``, longest first,
    ties in input order: the same inputs always make the same batches."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"Invalid batch_size. (expected a positive integer, found {batch_size!r})")
    batch_size = int(batch_size)
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def encode_waveforms(encoder: AudioEncoder, waves: Sequence[np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mono waveforms [N_i] at ``encoder.sample_rate`` -> ``frames`` [B, T, D] float32 (row i valid up to
    ``frame_lengths[i]``), ``frame_lengths`` [B] long and ``clip`` [B, D_clip] float32, in input order, on the CPU
    (the encoder runs where its weights are).

    Call with the encoder in eval mode, under ``torch.inference_mode()`` (or ``no_grad``) unless gradients are wanted.
    """
    if not waves:
        raise ValueError("encode_waveforms: no waveforms (expected at least one clip)")
    waveform, lengths = pad_waveforms(waves)  # (B, N_max), (B,)
    device = module_device(encoder)
    out = encoder(waveform.to(device), lengths.to(device))  # frames (B, T, D), frame_lengths (B,), clip (B, D_clip)
    return {"frames": out["frames"].float().cpu(), "frame_lengths": out["frame_lengths"].cpu(),
            "clip": out["clip"].float().cpu()}
