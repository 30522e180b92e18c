"""Fixtures: small real HDF5 feature stores (written with the project's store writer) and caption files; a tiny
random Llama with SmolLM2's real tokenizer and chat template for the prefix-LM captioners."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.checkpoint import model_checkpoint
from captioning.models import build_captioner
from captioning.vocab import Vocabulary
from common import save_checkpoint
from features.store import create_store

SOUNDS = [
    ("a dog barks loudly", "a dog is barking", "dog barking in the distance"),
    ("rain falls on a roof", "heavy rain is falling", "rain pours down on a tin roof"),
    ("a car drives past", "a vehicle passes by quickly", "a car engine revs and drives away"),
    ("birds chirp in the trees", "birds are singing", "many birds chirping outside"),
]
FRAME_DIM = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Small models: one thread is fastest; restored after each test so other packages' tests are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_split(folder: Path, name: str, n_clips: int, seed: int, encoder: str = "toy") -> tuple[Path, Path]:
    """A store of ``n_clips`` clips whose frames carry their sound class, and their captions.json."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(0).normal(size=(len(SOUNDS), FRAME_DIM)).astype(np.float32)
    ids = [f"{name}_{i:03d}.wav" for i in range(n_clips)]
    lengths = [int(rng.integers(5, 20)) for _ in ids]
    attrs = {"encoder": encoder, "encoder_spec": {"name": encoder}, "checkpoint_sha256": "", "sample_rate": 32000,
             "frame_hop": 320, "frame_dim": FRAME_DIM, "clip_dim": FRAME_DIM, "dtype": "float32"}
    captions = {}
    store = folder / f"{name}.h5"
    with create_store(store, attrs, ids, lengths) as writer:
        for i, (audio_id, T) in enumerate(zip(ids, lengths)):
            k = i % len(SOUNDS)
            frames = prototypes[k] + 0.3 * rng.normal(size=(T, FRAME_DIM)).astype(np.float32)
            writer.put(audio_id, frames, frames.mean(0))
            captions[audio_id] = list(SOUNDS[k])
        writer.commit()
    caps = folder / f"{name}_captions.json"
    caps.write_text(json.dumps(captions), encoding="utf-8")
    return store, caps


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("caption_data")
    train_store, train_caps = write_split(folder, "train", 24, seed=1)
    val_store, val_caps = write_split(folder, "val", 8, seed=2)
    return {"train_features": train_store, "train_captions": train_caps, "val_features": val_store,
            "val_captions": val_caps, "folder": folder}


@pytest.fixture
def tiny():
    """``tiny(data, exp_dir, decoder, epochs, **extra)``: training overrides for a seconds-long CPU run."""
    return tiny_overrides


def tiny_overrides(data: dict[str, Path], exp_dir: Path, decoder: str = "transformer", epochs: int = 1,
                   **extra) -> dict:
    """Overrides for a seconds-long CPU run on the toy data."""
    decoder_args = {"d_model": 32, "n_layers": 2, "d_ff": 64} if decoder == "transformer" else {"d_model": 32}
    overrides = {
        "exp_dir": str(exp_dir),
        "data.train_features": str(data["train_features"]), "data.train_captions": str(data["train_captions"]),
        "data.val_features": str(data["val_features"]), "data.val_captions": str(data["val_captions"]),
        "train.batch_size": 8, "features.expect_encoder": "toy",
        "model.encoder_args": {"hidden": 32, "n_layers": 2}, "model.decoder": decoder,
        "model.decoder_args": decoder_args,
        "train.epochs": epochs, "train.lr": 3e-3, "train.average_last": 2, "train.warmup_epochs": 0.5,
        "val.max_len": 12,
    }
    overrides.update(extra)
    return overrides


@pytest.fixture
def make():
    """``make(decoder, seed)``: a small random captioner (frame_dim 8, 30 words) in eval mode."""
    def _make(decoder: str, seed: int = 0):
        torch.manual_seed(seed)
        args = ({"d_model": 32, "n_layers": 2, "d_ff": 64} if decoder == "transformer"
                else {"d_model": 32, "n_layers": 2})
        return build_captioner({"encoder": "bigru", "encoder_args": {"hidden": 16, "n_layers": 2},
                                "decoder": decoder, "decoder_args": args, "frame_dim": 8, "vocab_size": 30}).eval()
    return _make


def save_random_captioner(path: Path, vocab: Vocabulary, decoder: str, frame_dim: int, feature_attrs: dict,
                          seed: int) -> Path:
    """A random 1-layer BiGRU captioner with a GRU or Transformer decoder, saved as a checkpoint at ``path``."""
    torch.manual_seed(seed)
    args = {"encoder": "bigru", "encoder_args": {"hidden": 16, "n_layers": 1}, "decoder": decoder,
            "decoder_args": {"d_model": 32, "n_layers": 1, **({"d_ff": 64} if decoder == "transformer" else {})},
            "frame_dim": frame_dim, "vocab_size": len(vocab)}
    model = build_captioner(args).eval()
    with torch.no_grad():  # a stronger input projection, so random captions depend visibly on the audio
        model.encoder.input_proj[0].weight.mul_(10.0)
    save_checkpoint(model_checkpoint(model, args, vocab, feature_attrs), path)
    return path
