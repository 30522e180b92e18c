"""Embeddings of whole clips and captions, and their similarity matrix, for evaluation, search and ensembles.

Evaluation never crops: each clip is encoded whole, the way feature extraction encodes it (``features.encode``:
batched by length, longest first, padded with lengths so a clip's embedding does not depend on its batch; long clips
windowed by the audio encoder's ``chunk_seconds``, chosen when the model is loaded, or fused by its feature fusion).
Two other ways to see long clips, for comparison (CLAP's): a central crop, and the average of window embeddings.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.tensor import module_device
from features.encode import encode_waveforms, plan_batches
from retrieval.model import BiEncoder


LONG_AUDIO = ("whole", "crop", "windows")


def audio_views(wave: np.ndarray, n: int, long_audio: str = "whole") -> list[np.ndarray]:
    """The parts of a clip that are embedded: all of it (``whole``, or any clip of at most ``n`` samples), its
    central ``n`` samples (``crop``: a random crop made deterministic), or consecutive ``n``-sample windows, the
    last one ending at the clip's end (``windows``, whose embeddings are averaged)."""
    if long_audio not in LONG_AUDIO:
        raise ValueError(f"Invalid long_audio. (expected one of {LONG_AUDIO}, found {long_audio!r})")
    if long_audio == "whole" or len(wave) <= n:
        return [wave]
    if long_audio == "crop":
        start = (len(wave) - n) // 2
        return [wave[start:start + n]]
    return [wave[start:start + n] for start in [*range(0, len(wave) - n, n), len(wave) - n]]


@torch.no_grad()
def audio_embeddings(model: BiEncoder, waves: Sequence[np.ndarray], batch_size: int = 16,
                     long_audio: str = "whole", window_seconds: float = 10.0) -> Tensor:
    """Clips (1-D float32 arrays at ``model.sample_rate``) -> unit vectors [Na, E], in input order; clips longer than
    ``window_seconds`` are seen as ``long_audio`` says (:func:`audio_views`)."""
    was_training = model.training
    model.eval()
    views = [audio_views(w, int(window_seconds * model.sample_rate), long_audio) for w in waves]
    flat = [v for parts in views for v in parts]
    out: list[Tensor | None] = [None] * len(flat)
    for rows in plan_batches([len(w) for w in flat], batch_size):
        clip = encode_waveforms(model.audio_encoder, [flat[i] for i in rows])["clip"]  # (B, D_clip)
        projected = model.audio_proj(clip.to(module_device(model))).float().cpu()
        for i, emb in zip(rows, F.normalize(projected, dim=-1)):  # as BiEncoder.embed_audio: (B, E)
            out[i] = emb
    model.train(was_training)
    embeddings, start = [], 0
    for parts in views:  # a clip seen in windows: the mean of their embeddings, made a unit vector again
        mine = torch.stack(out[start:start + len(parts)])
        embeddings.append(mine[0] if len(parts) == 1 else F.normalize(mine.mean(0), dim=-1))
        start += len(parts)
    return torch.stack(embeddings)


@torch.no_grad()
def text_embeddings(model: BiEncoder, captions: Sequence[str], batch_size: int = 256) -> Tensor:
    """Captions -> unit vectors [Nt, E], in input order."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    chunks = [model.embed_text(**{k: v.to(device) for k, v in model.text_encoder.tokenize(
        list(captions[i:i + batch_size])).items()}).float().cpu() for i in range(0, len(captions), batch_size)]
    model.train(was_training)
    return torch.cat(chunks)


def similarity(text: Tensor, audio: Tensor, chunk_size: int = 4096) -> np.ndarray:
    """Cosine similarity of unit vectors, ``text`` [Nt, E] x ``audio`` [Na, E] -> [Nt, Na] float32, in row chunks."""
    if text.shape[1] != audio.shape[1]:
        raise ValueError(f"similarity: embedding sizes differ (text {text.shape[1]}, audio {audio.shape[1]})")
    out = np.empty((text.shape[0], audio.shape[0]), dtype=np.float32)
    for start in range(0, text.shape[0], chunk_size):
        out[start:start + chunk_size] = (text[start:start + chunk_size] @ audio.T).numpy()  # (chunk, Na)
    return out
