"""An audio encoder that was never trained, in the file format training writes: the floor that trained encoders
are measured against (captioning from its features).

    python -m features.untrained --like exp/synth_claims/retrieval_cnn10/audio_encoder.pt \
        --out exp/synth_claims/untrained_cnn10/audio_encoder.pt [--seed 0] [--manifest data/synth_claims/development]

The architecture is that of ``--like`` (a project ``audio_encoder.pt``); the weights are the encoder's own random
initialisation under ``--seed``. With ``--manifest``, batch-norm statistics are measured on that split's clips (whole
clips, forward passes only, no weight changes): a network's random weights with statistics that fit its input, rather
than normalisation layers that do nothing.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import os

import torch
from torch import nn

from common.checkpoint import load_checkpoint, seed_everything
from features.encode import encode_waveforms, plan_batches
from features.encoders import build_audio_encoder
from features.manifest import check_audio_files, read_manifest
from features.waveforms import WaveformStore
from features.weights import save_audio_encoder


@torch.no_grad()
def measure_batchnorm(encoder: nn.Module, waves: list, batch_size: int = 16) -> None:
    """Set every batch-norm layer's running statistics to their mean over ``waves`` (batched by length)."""
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    encoder.eval()  # everything else as at inference (no SpecAugment, no dropout)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    for rows in plan_batches([len(w) for w in waves], batch_size):
        encode_waveforms(encoder, [waves[i] for i in rows])
    encoder.eval()


def untrained(like: str, out: str, seed: int = 0, manifest: str | None = None, batch_size: int = 16) -> str:
    """Write the untrained encoder of ``like``'s architecture to ``out``; returns ``out``."""
    spec = dict(load_checkpoint(like, kind="audio_encoder")["model_args"])
    seed_everything(seed)
    encoder = build_audio_encoder(**spec).eval()
    if manifest:
        split = read_manifest(manifest)
        check_audio_files(split, manifest)
        store = WaveformStore(split, encoder.sample_rate)
        measure_batchnorm(encoder, [store[i] for i in split.ids], batch_size)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_audio_encoder(encoder, out)
    print(f"{out}: untrained {spec['name']} (seed {seed})" + (f", batch norms measured on {manifest}" if manifest
                                                                 else ""))
    return out


if __name__ == "__main__":
    from common.cli import run

    run(untrained, "features.untrained")
