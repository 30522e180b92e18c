"""The caption encoder: a bidirectional GRU over frame features from a feature store."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common.tensor import lengths_to_mask, masked_mean


class BiGRUEncoder(nn.Module):
    """Linear input projection, then a multi-layer bidirectional GRU over packed sequences.

    Input: ``frames`` [B, T, frame_dim], ``frame_lengths`` [B]. Output dict: ``frames`` [B, T, 2*hidden] (zeros at
    padding), ``frame_lengths`` [B] (unchanged), ``clip`` [B, 2*hidden] (mean over the valid frames). Packing means
    padded frames never reach a valid output, so a clip encodes the same alone or in any batch.
    """

    def __init__(self, frame_dim: int, hidden: int = 256, n_layers: int = 3, dropout: float = 0.2):
        super().__init__()
        self.input_proj = nn.Sequential(nn.Linear(frame_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.gru = nn.GRU(hidden, hidden, num_layers=n_layers, batch_first=True, bidirectional=True,
                          dropout=dropout if n_layers > 1 else 0.0)
        self.out_dim = 2 * hidden

    def forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T, _ = frames.shape
        x = self.input_proj(frames)  # (B, T, H)
        packed = pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2H), zeros at padding
        clip = masked_mean(out, lengths_to_mask(frame_lengths, T), dim=1)  # (B, 2H)
        return {"frames": out, "frame_lengths": frame_lengths, "clip": clip}
