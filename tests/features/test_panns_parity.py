"""The project's cnn14 against the reference ``panns_inference.models.Cnn14`` with the same random weights."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

from features.encoders import build_audio_encoder
from features.weights import load_audio_encoder


def load_reference_models() -> types.ModuleType:
    """Import ``panns_inference/models.py`` without running the package ``__init__`` (which fetches files)."""
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or spec.origin is None:
        pytest.skip("panns_inference is not installed (pip install panns-inference --no-deps)")
    if "_panns_reference" not in sys.modules:
        package = types.ModuleType("_panns_reference")
        package.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["_panns_reference"] = package
    return importlib.import_module("_panns_reference.models")


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine terms, so eval-mode BatchNorm is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture(scope="module")
def clip_32k(clotho_mini: Path) -> torch.Tensor:
    wav = sorted((clotho_mini / "audio").glob("*.wav"))[0]
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), sr, 32000)[: 10 * 32000]
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]  # (1, N)


@pytest.fixture(scope="module")
def reference_cnn14() -> torch.nn.Module:
    models = load_reference_models()
    torch.manual_seed(0)
    ref = models.Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                       classes_num=527)
    _randomise_batchnorm(ref)
    return ref.eval()


def test_cnn14_matches_panns_inference(clip_32k: torch.Tensor, reference_cnn14: torch.nn.Module) -> None:
    ours = build_audio_encoder("cnn14").eval()
    ours.load_state_dict(reference_cnn14.state_dict(), strict=True)  # same names and shapes
    captured = {}
    hook = reference_cnn14.conv_block6.register_forward_hook(lambda m, i, o: captured.update(block6=o))
    with torch.inference_mode():
        ref_out = reference_cnn14(clip_32k)
        out = ours(clip_32k)
    hook.remove()
    x = captured["block6"].mean(dim=3)  # (1, 2048, T)
    ref_frames = (F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)).transpose(1, 2)  # PANNs' smoothing
    assert out["frames"].shape == ref_frames.shape == (1, 31, 2048)
    assert out["frame_lengths"].tolist() == [31]
    assert (out["frames"] - ref_frames).abs().max().item() < 1e-4
    assert (out["clip"] - ref_out["embedding"]).abs().max().item() < 1e-4
    assert (out["clipwise"] - ref_out["clipwise_output"]).abs().max().item() < 1e-4
    assert ref_frames.abs().max().item() > 1e-3  # the comparison is not between zeros

    # padding-aware path (explicit lengths) gives the same numbers as the published forward
    with torch.inference_mode():
        out_len = ours(clip_32k, torch.tensor([clip_32k.shape[1]]))
    assert (out_len["frames"] - ref_frames).abs().max().item() < 1e-4


def test_reference_state_dict_loads_as_official_checkpoint(tmp_path: Path, clip_32k: torch.Tensor,
                                                           reference_cnn14: torch.nn.Module) -> None:
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": reference_cnn14.state_dict()}, path)
    encoder = load_audio_encoder(path, "cnn14")
    assert encoder.sample_rate == 32000 and not encoder.training
    with torch.inference_mode():
        a = encoder(clip_32k[:, : 3 * 32000])["clipwise"]
        b = reference_cnn14(clip_32k[:, : 3 * 32000])["clipwise_output"]
    assert (a - b).abs().max().item() < 1e-4
