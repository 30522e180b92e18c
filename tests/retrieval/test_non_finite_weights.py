"""A checkpoint whose weights hold NaN or inf is refused at load, by every kind of loader and the commands over them,
instead of giving NaN scores, NaN index rows or NaN frames with exit status 0."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from features.weights import load_audio_encoder
from retrieval.model import load_model

REPO = Path(__file__).resolve().parents[2]


def _poisoned(source: Path, out: Path, key_part: str) -> tuple[Path, str]:
    checkpoint = torch.load(source, weights_only=True)
    state = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint["model"]
    key = next(k for k, v in state.items() if key_part in k and v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    torch.save(checkpoint, out)
    return out, key


def test_retrieval_checkpoints_and_audio_encoders_are_refused(trained, tiny_corpus, tmp_path):
    bad, key = _poisoned(trained / "best.pt", tmp_path / "best.pt", "audio_encoder.")
    with pytest.raises(ValueError, match=rf"{bad}: weights are not finite .*{key}"):
        load_model(bad)
    encoder_file = trained / "audio_encoder.pt"
    bad_encoder, key = _poisoned(encoder_file, tmp_path / "audio_encoder.pt", "conv")
    with pytest.raises(ValueError, match=rf"{bad_encoder}: weights are not finite .*{key}"):
        load_audio_encoder(bad_encoder)
    # the commands say so in one line and write nothing
    for args in (("retrieval.search", "text", "--checkpoints", str(bad), "--audio", str(tiny_corpus["val"]),
                  "--query", "a beep"),
                 ("features.extract", "--manifest", str(tiny_corpus["val"]), "--checkpoint", str(bad_encoder),
                  "--out", str(tmp_path / "store.h5"))):
        done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and "weights are not finite" in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "store.h5").exists()
