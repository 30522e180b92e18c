"""CLAP's feature fusion in the PANNs CNNs: parity with LAION-CLAP's ``pann_model`` (random perturbed weights,
loaded strictly), deterministic long audio at inference, random windows in training that a seed repeats."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from features.encoders import build_audio_encoder
from features.encoders.fusion import CLIP_SAMPLES, FusionMel, fusion_inputs, repeat_pad
from tests.conftest import import_laion_clap

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

SR = 48000
MEL = dict(sample_rate=SR, window_size=1024, hop_size=480, mel_bins=64, fmin=50, fmax=14000)
REL_TOL = 1e-5  # relative to the largest value: perturbed CNN14 weights reach values of 1e4 and more


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state dict with random shifts and batch-norm statistics, so every weight matters."""
    torch.manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            value = value * (0.5 + torch.rand_like(value))
        elif value.is_floating_point() and "extractor" not in key:
            value = value + 0.05 * torch.randn_like(value)
        state[key] = value
    return state


@pytest.fixture(scope="module")
def pann_model(reference_dir: Path):
    import_laion_clap(reference_dir)
    return sys.modules["laion_clap.pann_model"]


def clip(seconds: float, freq: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    return (torch.sin(2 * torch.pi * freq * t) * 0.3 + 0.05 * torch.randn(len(t), generator=gen)).float()


@pytest.mark.parametrize("fusion_type", ["aff_2d", "iaff_2d", "daf_2d"])
def test_fused_outputs_match_laion_clap(pann_model, fusion_type):
    """LAION-CLAP fuses in its CNN14 (its CNN10 and CNN6 take the flag and build nothing); here any PANNs CNN can."""
    arch = "cnn14"
    ref = pann_model.Cnn14(classes_num=527, enable_fusion=True, fusion_type=fusion_type, **MEL)
    ref.load_state_dict(perturbed(ref, seed=1))
    ref.eval()
    ours = build_audio_encoder(arch, sample_rate=SR, fusion_type=fusion_type)
    ours.load_state_dict(ref.state_dict(), strict=True)  # LAION-CLAP's names, every key
    ours.eval()
    waves = [clip(23.7, 300.0, 0), clip(3.3, 1500.0, 1)]  # a long clip with three local views beside a short one
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.no_grad():
        views, longer = fusion_inputs(FusionMel(), padded, lengths, training=False)
        assert longer.tolist() == [True, False]
        expected = ref({"mel_fusion": views, "longer": longer.clone()})
        got = ours(padded, lengths)
    for key, ref_key in (("clip", "embedding"), ("clipwise", "clipwise_output")):
        scale = expected[ref_key].abs().max().clamp(min=1.0)
        assert (got[key] - expected[ref_key]).abs().max() / scale < REL_TOL, key
    assert got["frames"].shape[1] == int(ours.num_frames(lengths)[0]) == int(ours.num_frames(lengths)[1])


def test_repeat_pad_matches_laion_clap_without_fusion(pann_model):
    """A converted PANN-14 CLAP without fusion (repeat_pad): short clips are repeated to 10 s as CLAP's data code
    does, in a batch beside a 10-s clip; the clip embedding is LAION's."""
    ref = pann_model.Cnn14(classes_num=527, **MEL)
    ref.load_state_dict(perturbed(ref, seed=2))
    ref.eval()
    ours = build_audio_encoder("cnn14", sample_rate=SR, repeat_pad=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    waves = [clip(3.3, 1500.0, 1), clip(10.0, 300.0, 0)]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.no_grad():
        expected = ref({"waveform": torch.stack([repeat_pad(w, CLIP_SAMPLES) for w in waves])})["embedding"]
        got = ours(padded, lengths)["clip"]
    assert (got - expected).abs().max() / expected.abs().max() < REL_TOL


def test_long_clip_is_the_same_alone_in_a_batch_and_twice():
    enc = build_audio_encoder("cnn14", width=0.125, sample_rate=SR, fusion_type="aff_2d").eval()
    long, short = clip(41.0, 220.0, 2), clip(2.0, 880.0, 3)
    padded = torch.nn.utils.rnn.pad_sequence([long, short], batch_first=True)
    with torch.no_grad():
        together = enc(padded, torch.tensor([len(long), len(short)]))["clip"]
        alone = enc(long[None])["clip"]
        again = enc(long[None])["clip"]
    assert torch.equal(alone, again) and torch.equal(together[0], alone[0])  # bit-identical, as search needs


def test_training_windows_are_random_and_seeded():
    mel = FusionMel()
    long = clip(35.0, 500.0, 4)[None]
    n = torch.tensor([long.shape[1]])
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(fusion_inputs(mel, long, n, training=True)[0])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    fixed = fusion_inputs(mel, long, n, training=False)[0]
    assert torch.equal(fixed[:, 0], draws[0][:, 0])  # the global view never moves
    short = clip(4.0, 500.0, 5)[None]
    torch.manual_seed(0)
    _, longer = fusion_inputs(mel, short, torch.tensor([short.shape[1]]), training=True)
    assert longer.tolist() == [True]  # as CLAP trains: a batch without a long clip still trains the fusion layers
    assert CLIP_SAMPLES == 10 * SR


def test_fusion_settings_are_checked():
    with pytest.raises(ValueError, match="fusion_type needs CLAP's log-mel"):
        build_audio_encoder("cnn14", sample_rate=32000, fusion_type="aff_2d")
    with pytest.raises(ValueError, match="Wavegram-Logmel CNN has no fusion"):
        build_audio_encoder("wavegram_logmel_cnn14", sample_rate=SR, hop_size=320, fusion_type="aff_2d")
    with pytest.raises(ValueError, match="Invalid fusion_type"):
        build_audio_encoder("cnn14", sample_rate=SR, fusion_type="aff_1d")
