"""HTS-AT (registered ``htsat``) against LAION-CLAP's ``HTSAT_Swin_Transformer``, CLAP's fusion log-mel against
librosa, and the encoder contract: padding, long audio, loading."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import torch

from features.encoders import build_audio_encoder
from features.encoders.fusion import CLAP_MEL, CLIP_SAMPLES, FusionMel, MEL_FRAMES, fusion_views, repeat_pad
from features.encoders.htsat import HtsatEncoder
from features.weights import encoder_from_state, load_audio_encoder, save_audio_encoder
from tests.conftest import import_laion_clap

SR = 48000
# the reference builds its window index with torch.meshgrid without indexing=
pytestmark = [pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),
              pytest.mark.device_audit]  # tests/device_audit.py
SMALL = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], classes_num=10)


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> types.ModuleType:
    return import_laion_clap(reference_dir)[1]  # LAION-CLAP's htsat module


def reference_pair(reference: types.ModuleType, fusion_type: str | None = None, seed: int = 0,
                   **arch: Any) -> tuple[torch.nn.Module, HtsatEncoder]:
    """LAION-CLAP's HTS-AT with perturbed random weights and batch-norm statistics (so every parameter matters),
    and the project's encoder holding its state dict, loaded strictly; both in eval mode."""
    arch = {**SMALL, **arch}
    torch.manual_seed(seed)
    cfg = types.SimpleNamespace(mel_bins=64, window_size=1024, hop_size=480, sample_rate=SR, fmin=50, fmax=14000)
    ref = reference.HTSAT_Swin_Transformer(
        spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=arch["classes_num"],
        embed_dim=arch["embed_dim"], depths=arch["depths"], num_heads=arch["num_heads"], window_size=8, config=cfg,
        enable_fusion=fusion_type is not None, fusion_type=str(fusion_type))
    state = {}
    for key, value in ref.state_dict().items():
        if key.endswith("running_var"):
            value = value * (0.5 + torch.rand_like(value))
        elif value.is_floating_point() and "extractor" not in key and "attn_mask" not in key:
            value = value + 0.05 * torch.randn_like(value)
        state[key] = value
    ref.load_state_dict(state)
    ours = encoder_from_state({"name": "htsat", "fusion_type": fusion_type, **arch}, ref.state_dict(), "reference")
    return ref.eval(), ours


def laion_input(clip: torch.Tensor) -> torch.Tensor:
    """LAION-CLAP's "repeatpad" written out as its data code does it, (N,) -> (480000,)."""
    n_repeat = int(CLIP_SAMPLES / len(clip))
    clip = clip.repeat(n_repeat)
    return torch.nn.functional.pad(clip, (0, CLIP_SAMPLES - len(clip)))


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    """Noise-modulated tones: 10 s, 3.3 s, 23.7 s at 48 kHz."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for seconds, freq in ((10.0, 440.0), (3.3, 1500.0), (23.7, 300.0)):
        t = torch.arange(int(seconds * SR)) / SR
        tone = torch.sin(2 * torch.pi * freq * t) * (0.3 + 0.2 * torch.sin(2 * torch.pi * 0.7 * t))
        out.append((tone + 0.05 * torch.randn(len(t), generator=gen)).float())
    return out


def batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


# --- parity with LAION-CLAP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [SMALL, dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[4, 8, 16, 32],
                                              classes_num=527)], ids=["small", "tiny"])
def test_plain_htsat_matches_laion_clap(reference, clips, arch):
    ref, ours = reference_pair(reference, **arch)
    short = clips[:2]  # 10 s and 3.3 s: one pass each, as CLAP prepares them
    with torch.no_grad():
        expected = ref({"waveform": torch.stack([laion_input(c) for c in short])})
        got = ours(*batch(short))
    assert (got["clip"] - expected["embedding"]).abs().max() < 1e-4
    assert (torch.sigmoid(got["logits"]) - expected["clipwise_output"]).abs().max() < 1e-5
    # CLAP's fine-grained output is the 32 frames, each repeated 32 times
    frames = expected["fine_grained_embedding"][:, ::32]
    assert got["frame_lengths"].tolist() == [32, 11]
    assert (got["frames"][0] - frames[0]).abs().max() < 1e-4
    assert (got["frames"][1, :11] - frames[1, :11]).abs().max() < 1e-4 and not got["frames"][1, 11:].any()


@pytest.mark.parametrize("fusion_type", ["aff_2d", "iaff_2d", "daf_2d"])
def test_fusion_htsat_matches_laion_clap(reference, clips, fusion_type):
    ref, ours = reference_pair(reference, fusion_type, seed=1)
    waves = [clips[2], clips[1]]  # 23.7 s (fused: global + three local views) and 3.3 s (global only)
    mel = FusionMel()
    views = [fusion_views(mel(clips[2])), (mel(laion_input(clips[1])).expand(4, -1, -1), False)]
    with torch.no_grad():
        expected = ref({"mel_fusion": torch.stack([v for v, _ in views]),
                        "longer": torch.tensor([longer for _, longer in views])})
        got = ours(*batch(waves))
    assert views[0][1] and got["frame_lengths"].tolist() == [32, 11]
    assert (got["clip"] - expected["embedding"]).abs().max() < 1e-4
    assert (torch.sigmoid(got["logits"]) - expected["clipwise_output"]).abs().max() < 1e-5
    # the local views matter: without them the long clip's embedding moves
    with torch.no_grad():
        alone = ref({"mel_fusion": views[0][0][None], "longer": torch.tensor([False])})["embedding"]
    assert (alone[0] - expected["embedding"][0]).abs().max() > 1e-3


def test_reference_keys_are_ours(reference):
    for fusion_type in (None, "aff_2d", "iaff_2d", "daf_2d"):
        ref, ours = reference_pair(reference, fusion_type)
        assert list(ref.state_dict()) == list(ours.state_dict())


# --- CLAP's fusion log-mel ----------------------------------------------------------------------------------------

def test_fusion_mel_matches_librosa_htk_mel(clips):
    wave = clips[1][:SR * 2]
    got = FusionMel()(wave)
    power = librosa.feature.melspectrogram(
        y=wave.double().numpy(), sr=SR, n_fft=1024, hop_length=480, win_length=1024, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=64, fmin=50, fmax=14000, htk=True, norm=None)
    expected = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).T
    assert got.shape == expected.shape == (SR * 2 // 480 + 1, 64)
    assert np.abs(got.numpy() - expected).max() < 2e-3  # dB, float32 against float64


def test_fusion_views_windows_and_squeeze():
    mel = torch.arange(2500 * 64, dtype=torch.float32).view(2500, 64)
    views, longer = fusion_views(mel)
    assert longer and views.shape == (4, MEL_FRAMES, 64)
    starts = [int(views[i, 0, 0]) // 64 for i in (1, 2, 3)]
    assert starts == [250, 750, 1250]  # the middle of each third of the 1500 possible starts
    squeezed = views[0, :, 0] / 64  # the whole clip, 2.5 frames per frame: from its first to its last frame
    assert squeezed[0] < 1 and squeezed[-1] > 2498 and bool((squeezed.diff() > 2.4).all())
    same, longer = fusion_views(mel[:MEL_FRAMES])
    assert not longer and torch.equal(same[3], mel[:MEL_FRAMES])


def test_repeat_pad_is_laions():
    clip = torch.arange(7, dtype=torch.float32)
    assert torch.equal(repeat_pad(clip, 20), laion_input(clip)[:0].new_tensor(
        [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0]))


# --- the encoder contract -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion_type", [None, "aff_2d"])
def test_clip_in_padded_batch_equals_clip_alone(clips, fusion_type):
    torch.manual_seed(0)
    enc = build_audio_encoder("htsat", fusion_type=fusion_type, **SMALL).eval()
    with torch.no_grad():
        together = enc(*batch([clips[2], clips[1]]))
        alone = enc(clips[1][None])
    n = int(alone["frame_lengths"][0])
    assert together["frame_lengths"][1] == n
    assert (together["clip"][1] - alone["clip"][0]).abs().max() < 1e-5
    assert (together["frames"][1, :n] - alone["frames"][0]).abs().max() < 1e-5


def test_long_audio_windows_of_ten_seconds(clips):
    torch.manual_seed(0)
    enc = build_audio_encoder("htsat", **SMALL).eval()
    long = clips[2]  # 23.7 s: windows of 10, 10 and 3.7 s
    with torch.no_grad():
        whole = enc(long[None])
        first = enc(long[None, :CLIP_SAMPLES])
        last = enc(long[None, 2 * CLIP_SAMPLES:])
    assert whole["frame_lengths"].tolist() == [76] == [int(np.ceil(len(long) / 15000))]
    assert (whole["frames"][0, :32] - first["frames"][0]).abs().max() < 1e-5
    assert (whole["frames"][0, 64:] - last["frames"][0]).abs().max() < 1e-5
    weights = torch.tensor([CLIP_SAMPLES, CLIP_SAMPLES, len(long) - 2 * CLIP_SAMPLES]) / len(long)
    with torch.no_grad():
        middle = enc(long[None, CLIP_SAMPLES:2 * CLIP_SAMPLES])
    expected = weights[0] * first["clip"] + weights[1] * middle["clip"] + weights[2] * last["clip"]
    assert (whole["clip"] - expected).abs().max() < 1e-5


def test_training_mode_runs_backward_with_fusion():
    torch.manual_seed(0)
    enc = build_audio_encoder("htsat", fusion_type="iaff_2d", **SMALL).train()
    out = enc(torch.randn(2, SR * 2) * 0.1)
    out["clip"].sum().backward()  # no clip is long: one is made "longer" so the fusion layers learn (as CLAP)
    assert enc.patch_embed.mel_conv2d.weight.grad.abs().sum() > 0
    assert enc.patch_embed.fusion_model.global_att2[1].weight.grad is None  # CLAP's unused branch


def test_save_load_round_trip_and_strictness(tmp_path, clips):
    torch.manual_seed(0)
    enc = build_audio_encoder("htsat", fusion_type="aff_2d", **SMALL).eval()
    save_audio_encoder(enc, tmp_path / "htsat.pt")
    loaded = load_audio_encoder(tmp_path / "htsat.pt")
    with torch.no_grad():
        assert torch.equal(loaded(clips[1][None])["clip"], enc(clips[1][None])["clip"])
    state = enc.state_dict()
    spec = {"name": "htsat", "fusion_type": "aff_2d", **SMALL}
    missing = {k: v for k, v in state.items() if k != "patch_embed.mel_conv2d.weight"}
    with pytest.raises(ValueError, match=r"CLAP\.pt.*patch_embed\.mel_conv2d\.weight"):
        encoder_from_state(spec, missing, "CLAP.pt")
    wrong = dict(state, **{"norm.weight": torch.ones(3)})
    with pytest.raises(ValueError, match=r"CLAP\.pt.*norm\.weight"):
        encoder_from_state(spec, wrong, "CLAP.pt")
    with pytest.raises(ValueError, match="fusion_type"):
        build_audio_encoder("htsat", fusion_type="aff_1d")
    assert CLAP_MEL.sample_rate == enc.sample_rate == SR


def test_unconverted_laion_clap_checkpoint_is_refused_with_advice(tmp_path):
    path = tmp_path / "630k-audioset-best.pt"
    state = {"module.audio_branch.bn0.weight": torch.ones(64), "module.logit_scale_a": torch.ones(())}
    torch.save({"state_dict": state}, path)
    advice = r"630k-audioset-best\.pt is a LAION-CLAP checkpoint.*python -m retrieval\.clap"
    with pytest.raises(ValueError, match=advice):
        load_audio_encoder(path)
