"""The tagger: an audio encoder with one logit per class on its clip embedding (PANNs' AudioSet set-up), its
validation by macro mAP."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from features.encode import encode_waveforms, plan_batches


class Tagger(nn.Module):
    """An audio encoder with one logit per class on its clip embedding."""

    def __init__(self, audio_encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        if hasattr(audio_encoder, "fc_audioset"):  # PANNs' own AudioSet head: unused, kept out of training
            audio_encoder.fc_audioset.requires_grad_(False)
        self.head = nn.Linear(int(audio_encoder.clip_dim), n_classes)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.audio_encoder(waveform, lengths)["clip"])  # (B, classes) logits


def macro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes (columns with at least one positive) of the average precision of rows ranked by score."""
    aps = []
    for k in range(targets.shape[1]):
        positive = targets[np.argsort(-scores[:, k], kind="stable"), k] > 0
        if positive.any():
            hits = np.cumsum(positive)
            aps.append(float(np.mean(hits[positive] / (np.flatnonzero(positive) + 1))))
    return float(np.mean(aps)) if aps else float("nan")


@torch.no_grad()
def validate(model: Tagger, waves: list[np.ndarray], targets: Tensor, batch_size: int) -> dict[str, float]:
    """Macro mAP and mean BCE of whole clips ``waves`` against ``targets`` [N, classes] (batched by length, so a
    clip's score does not depend on its batch)."""
    was_training = model.training
    model.eval()
    logits = torch.empty(len(waves), targets.shape[1])
    for rows in plan_batches([len(w) for w in waves], batch_size):
        clip = encode_waveforms(model.audio_encoder, [waves[i] for i in rows])["clip"]
        logits[rows] = model.head(clip.to(model.head.weight.device)).float().cpu()
    model.train(was_training)
    return {"mAP": macro_average_precision(torch.sigmoid(logits).numpy(), targets.numpy()),
            "loss": F.binary_cross_entropy_with_logits(logits, targets).item()}
