"""The audio encoders shipped with the project: small, what their card says, loaded strictly by the loader of
official PANNs weights, the architecture the synth recipe's retrieval configs start from; and the reproduction check."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from features.encode import encode_waveforms
from features.encoders import encoder_spec
from features.weights import load_audio_encoder
from retrieval.train import DEFAULTS as RETRIEVAL_DEFAULTS
from tagging.data import generated_clip
from tagging.pretrained import FOLDER, MAP_TOLERANCE, SHIPPED, matches, pretrained_encoder

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_encoder_is_what_its_card_says(name):
    path = pretrained_encoder(name)  # its SHA-256 checked
    card = SHIPPED[name]
    assert path.stat().st_size <= 20 * 2**20
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    assert card["sha256"] in readme and name in readme and card["command"] in readme
    encoder = load_audio_encoder(path)  # strictly, through the loader of official PANNs weights
    model = name.split("_")[0]
    config = load_config(RETRIEVAL_DEFAULTS, REPO / "recipes" / "synth" / "conf" / f"retrieval_{model}.yaml")
    wanted = encoder_spec(config["model"]["audio_encoder"])
    assert {k: encoder.spec[k] for k in ("name", "width", "sample_rate", "hop_size")} == \
        {k: wanted[k] for k in ("name", "width", "sample_rate", "hop_size")}
    wave, _ = generated_clip(12345, 0, encoder.sample_rate)
    with torch.inference_mode():
        out = encode_waveforms(encoder.eval(), [wave])
    assert torch.isfinite(out["clip"]).all() and out["clip"].std() > 0


def test_a_reproduction_matches_bitwise_or_by_map(tmp_path):
    name = sorted(SHIPPED)[0]
    card = SHIPPED[name]
    same = tmp_path / "same" / "audio_encoder.pt"
    same.parent.mkdir()
    shutil.copy(FOLDER / name, same)
    assert "identical" in matches(same, name)
    other = tmp_path / "other" / "audio_encoder.pt"
    other.parent.mkdir()
    other.write_bytes(same.read_bytes() + b"\0")
    for gap, ok in ((MAP_TOLERANCE / 2, True), (MAP_TOLERANCE * 2, False)):
        (other.parent / "history.jsonl").write_text(json.dumps({"val_mAP": card["val_mAP"] - gap}) + "\n")
        if ok:
            assert "within" in matches(other, name)
        else:
            with pytest.raises(ValueError, match="not a reproduction"):
                matches(other, name)
    done = subprocess.run([sys.executable, "-m", "tagging.pretrained"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and all(n in done.stdout for n in SHIPPED), done.stderr
