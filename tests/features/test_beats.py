"""BEATs against the official code (``shared/reference/beats`` beside the checkout) with the same random weights
and the same fbank, official checkpoints loaded strictly, padding that does not leak, long audio in windows.

The official code computes its fbank with torchaudio, which has no build here: the reference is given the project's
fbank (its ``ta_kaldi.fbank`` is replaced; ``features.kaldi`` is tested against Kaldi on its own), so the comparison
runs from the fbank onwards, the 2**15 scale and the normalisation included.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from features.encoders import AudioEncoder, build_audio_encoder
from features.encoders.beats import BEATS_FBANK, BEATS_PUBLISHED, BeatsEncoder, official_spec_and_state
from features.kaldi import LOG_FLOOR, fbank
from features.weights import chunked_spec, load_audio_encoder, save_audio_encoder

SR = 16000
# the official code builds its positional convolution with torch's deprecated weight_norm
pytestmark = [pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning"),
              pytest.mark.device_audit]  # tests/device_audit.py

# Tiny configs in the official layout, one per family of layer variants the official configs describe.
TINY = dict(input_patch_size=16, embed_dim=24, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
            encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4)
VARIANTS: dict[str, dict[str, Any]] = {
    # the published models: post-LN with DeepNorm, gated relative position bias (iter1-iter3+)
    "deepnorm_gated": dict(TINY, deep_norm=True, relative_position_embedding=True, gru_rel_pos=True, num_buckets=320,
                           max_distance=800, layer_wise_gradient_decay_ratio=0.6, encoder_layerdrop=0.05,
                           dropout=0.0, attention_dropout=0.0),
    "prenorm_glu": dict(TINY, layer_norm_first=True, relative_position_embedding=True, activation_fn="glu",
                        num_buckets=64, max_distance=128),
    "postnorm_plain": dict(TINY, embed_dim=32, conv_bias=True, activation_fn="relu", conv_pos=15),
}
FINETUNED = dict(VARIANTS["deepnorm_gated"], finetuned_model=True, predictor_dropout=0.0, predictor_class=527)


def import_reference(folder: Path) -> types.ModuleType:
    """Import the official ``BEATs.py`` (its modules import each other by bare name) and give it our fbank."""
    added = [name for name in ("BEATs", "backbone", "modules") if name not in sys.modules]
    stubs = {}
    try:
        importlib.import_module("torchaudio.compliance.kaldi")
    except ImportError:  # the official module imports it at the top; it is replaced below anyway
        stubs = {name: types.ModuleType(name) for name in
                 ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi")}
        stubs["torchaudio"].compliance = stubs["torchaudio.compliance"]
        stubs["torchaudio.compliance"].kaldi = stubs["torchaudio.compliance.kaldi"]
    sys.path.insert(0, str(folder))
    sys.modules.update(stubs)
    try:
        module = importlib.import_module("BEATs")
    finally:
        sys.path.remove(str(folder))
        for name in added + list(stubs):
            sys.modules.pop(name, None)
    module.ta_kaldi = types.SimpleNamespace(fbank=_fbank_for_reference)
    return module


def _fbank_for_reference(waveform: torch.Tensor, **options: Any) -> torch.Tensor:
    """torchaudio's ``kaldi.fbank`` as BEATs calls it, computed by the project: (1, N) scaled by 2**15 -> (T, 128)."""
    assert options == dict(num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10), options
    return fbank(waveform / 2 ** 15, None, BEATS_FBANK)[0][0]


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> types.ModuleType:
    """The official BEATs module (tests/conftest.py's ``reference_dir``: skips where the reference is absent)."""
    folder = reference_dir / "beats"
    if not (folder / "BEATs.py").is_file():
        pytest.fail(f"The official BEATs code is not at {folder} (the reference folder is incomplete)")
    return import_reference(folder)


def official_pair(reference: types.ModuleType, cfg: dict[str, Any], path: Path,
                  seed: int = 0) -> tuple[torch.nn.Module, BeatsEncoder]:
    """The official model with perturbed random weights (so every parameter matters), saved as an official
    checkpoint, and the project's encoder loaded strictly from that file."""
    torch.manual_seed(seed)
    ref = reference.BEATs(reference.BEATsConfig(cfg))
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    torch.save({"cfg": cfg, "model": ref.state_dict()}, path)
    return ref.eval(), load_official(path)


def load_official(path: Path, **kwargs: Any) -> BeatsEncoder:
    """An official ``{"cfg", "model"}`` file through the project's loader (whole clips unless told otherwise)."""
    return load_audio_encoder(path, "beats", **{"chunk_seconds": None, **kwargs})


def reference_frames(ref: torch.nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """Official tokens (B, T * 8, D) -> frames (B, T, D), frequency patches averaged."""
    with torch.no_grad():
        tokens, _ = ref.extract_features(wave)
    return tokens.view(tokens.shape[0], -1, 8, tokens.shape[-1]).mean(dim=2)


@pytest.fixture(scope="module")
def clip_16k(clotho_mini: Path) -> torch.Tensor:
    """6 s of a Clotho clip (real where present) at 16 kHz, (1, N)."""
    wav = sorted((clotho_mini / "audio").glob("*.wav"))[0]
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), sr, SR)[: 6 * SR]
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_frames_match_the_official_code(variant: str, reference: types.ModuleType, clip_16k: torch.Tensor,
                                        tmp_path: Path) -> None:
    ref, ours = official_pair(reference, VARIANTS[variant], tmp_path / "beats.pt")
    wave = torch.cat([clip_16k, torch.randn_like(clip_16k) * 0.1])  # a real clip and noise, same length
    expected = reference_frames(ref, wave)
    with torch.no_grad():
        out = ours(wave)
    assert out["frames"].shape == expected.shape == (2, int(ours.num_frames(torch.tensor([wave.shape[1]]))), 32)
    diff = (out["frames"] - expected).abs().max().item()
    print(f"{variant}: max |frames - official| = {diff:.2e}")
    assert diff < 1e-5
    assert torch.allclose(out["clip"], expected.mean(dim=1), atol=1e-5)
    assert "logits" not in out


def test_finetuned_head_matches_official_probabilities(reference: types.ModuleType, tmp_path: Path) -> None:
    ref, ours = official_pair(reference, FINETUNED, tmp_path / "finetuned.pt", seed=1)
    torch.manual_seed(2)
    lengths = [int(SR * 2.9), int(SR * 1.7)]
    wave = torch.randn(2, lengths[0]) * 0.1
    with torch.no_grad():
        out = ours(wave, torch.tensor(lengths))
        for i, n in enumerate(lengths):  # the official head on each clip alone
            probs, _ = ref.extract_features(wave[i:i + 1, :n])
            diff = (torch.sigmoid(out["logits"][i]) - probs[0]).abs().max().item()
            assert out["logits"].shape == (2, 527) and diff < 1e-5, diff
    assert ours.predictor.weight.shape == (527, 32)


def test_padded_clip_equals_clip_alone(reference: types.ModuleType, tmp_path: Path) -> None:
    ref, ours = official_pair(reference, VARIANTS["deepnorm_gated"], tmp_path / "beats.pt")
    torch.manual_seed(3)
    lengths = [int(SR * 3.2), int(SR * 2.1) + 77, 1000]  # the last is shorter than one patch (2800 samples)
    batch = torch.randn(3, lengths[0]) * 0.1  # rows keep noise past their lengths: it must be ignored
    with torch.no_grad():
        out = ours(batch, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone = ours(batch[i:i + 1, :n].clone())
            t = int(out["frame_lengths"][i])
            assert alone["frames"].shape[1] == t >= 1
            assert torch.allclose(out["frames"][i, :t], alone["frames"][0], atol=1e-6), i
            assert torch.allclose(out["clip"][i], alone["clip"][0], atol=1e-6), i
            assert not out["frames"][i, t:].any()
            if n >= ours.min_samples:  # and the official model on the clip alone
                assert (out["frames"][i, :t] - reference_frames(ref, batch[i:i + 1, :n])[0]).abs().max() < 1e-5
    assert out["frame_lengths"].tolist() == ours.num_frames(torch.tensor(lengths)).tolist() == [19, 13, 1]


def test_long_audio_in_windows(tmp_path: Path) -> None:
    torch.manual_seed(4)
    whole = build_audio_encoder("beats", **VARIANTS["deepnorm_gated"]).eval()
    windowed = build_audio_encoder("beats", chunk_seconds=1.0, **VARIANTS["deepnorm_gated"]).eval()
    windowed.load_state_dict(whole.state_dict())
    assert windowed.chunk_samples == 6 * windowed.frame_hop  # 1 s rounded down to whole patches (0.96 s)
    n = int(SR * 3.3)
    wave = torch.randn(2, n) * 0.1
    lengths = torch.tensor([n, int(SR * 1.9)])
    with torch.no_grad():
        first, second = windowed(wave, lengths), windowed(wave, lengths)
        alone = windowed(wave[1:, :int(lengths[1])].clone())
        one_pass = whole(wave, lengths)
        window0 = whole(wave[:, :windowed.chunk_samples + windowed.window_overlap])
    assert torch.equal(first["frames"], second["frames"]) and torch.equal(first["clip"], second["clip"])
    counts = first["frame_lengths"].tolist()
    assert counts == one_pass["frame_lengths"].tolist() == windowed.num_frames(lengths).tolist() == [20, 11]
    assert first["frames"].shape[1] == 20
    # the first window's frames are those of its samples alone: windows see exactly the whole clip's fbank frames
    assert torch.allclose(first["frames"][:, :6], window0["frames"], atol=1e-6)
    assert torch.allclose(first["frames"][1, :11], alone["frames"][0], atol=1e-6)
    assert torch.allclose(first["clip"][1], alone["clip"][0], atol=1e-6)
    assert not first["frames"][1, 11:].any()


def official_checkpoint(cfg: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """An official-layout checkpoint of random weights (the layout is the official one: see the parity tests)."""
    torch.manual_seed(0)
    state = build_audio_encoder("beats", **cfg).state_dict()
    torch.save({"cfg": cfg, "model": state}, path)
    return state


def test_strict_loading_names_file_keys_and_shapes(tmp_path: Path) -> None:
    cfg = VARIANTS["deepnorm_gated"]
    state = official_checkpoint(cfg, tmp_path / "beats.pt")
    assert torch.equal(load_official(tmp_path / "beats.pt").encoder.layer_norm.bias, state["encoder.layer_norm.bias"])
    state = dict(state)
    del state["encoder.layers.1.fc2.bias"]
    state["encoder.extra.weight"] = torch.zeros(3)
    state["post_extract_proj.weight"] = torch.zeros(7, 5)
    torch.save({"cfg": cfg, "model": state}, tmp_path / "broken.pt")
    with pytest.raises(ValueError) as err:
        load_official(tmp_path / "broken.pt")
    msg = str(err.value)
    for part in ("broken.pt", "missing keys: encoder.layers.1.fc2.bias", "unexpected keys: encoder.extra.weight",
                 "post_extract_proj.weight (checkpoint (7, 5) vs model (32, 24))"):
        assert part in msg, part
    # a fine-tuned checkpoint is not a pre-trained one: the head is an unexpected key, not silently dropped
    torch.save({"cfg": cfg, "model": build_audio_encoder("beats", **FINETUNED).state_dict()}, tmp_path / "head.pt")
    with pytest.raises(ValueError, match="unexpected keys: predictor.bias, predictor.weight"):
        load_official(tmp_path / "head.pt")
    torch.save({"cfg": {**cfg, "encoder_layer": 3}, "model": state}, tmp_path / "typo.pt")
    with pytest.raises(ValueError, match=r"typo.pt: Unknown BEATs config keys \['encoder_layer'\]"):
        load_official(tmp_path / "typo.pt")
    with pytest.raises(ValueError, match="not an official BEATs checkpoint.*found \\['model'\\]"):
        official_spec_and_state({"model": state}, "panns.pth")


class Payload:
    """Stands for code hidden in a checkpoint."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"cfg": dict(TINY), "model": {}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt: refused: .*Payload"):
        load_official(tmp_path / "evil.pt")


def test_encoder_contract_and_project_checkpoints(tmp_path: Path) -> None:
    official_checkpoint(FINETUNED, tmp_path / "finetuned.pt")
    enc = load_official(tmp_path / "finetuned.pt")
    assert isinstance(enc, AudioEncoder) and not enc.training
    assert enc.spec == {"name": "beats", **FINETUNED}
    assert (enc.sample_rate, enc.frame_dim, enc.clip_dim, enc.frame_hop) == (16000, 32, 32, 2560)
    n = int(SR * 2.5)
    with torch.no_grad():
        out = enc(torch.randn(2, n) * 0.1)
    assert out["frames"].shape == (2, 15, 32) and out["clip"].shape == (2, 32) and out["logits"].shape == (2, 527)
    assert out["frame_lengths"].dtype == torch.long and out["frame_lengths"].tolist() == [15, 15]
    assert abs(15 - n / enc.frame_hop) <= 1
    # the window for long audio is chosen at load time, like the PANNs CNNs'
    assert chunked_spec(enc.spec, 10.0)["chunk_seconds"] == 10.0
    assert load_official(tmp_path / "finetuned.pt", chunk_seconds=10.0).chunk_samples == 62 * 2560
    # the project's own format round-trips through features.weights
    save_audio_encoder(enc, tmp_path / "audio_encoder.pt")
    again = load_audio_encoder(tmp_path / "audio_encoder.pt", "beats")
    assert again.spec == {"name": "beats", **FINETUNED, "chunk_seconds": 10.0}
    wave = torch.randn(1, n) * 0.1
    with torch.no_grad():
        assert torch.equal(again(wave)["frames"], enc(wave)["frames"])


def test_published_shapes() -> None:
    with torch.device("meta"):
        enc = build_audio_encoder("beats", **{**BEATS_PUBLISHED, "finetuned_model": True, "predictor_class": 527})
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    expected = {"patch_embedding.weight": (512, 1, 16, 16), "layer_norm.weight": (512,),
                "post_extract_proj.weight": (768, 512), "encoder.pos_conv.0.weight_g": (1, 1, 128),
                "encoder.pos_conv.0.weight_v": (768, 48, 128),
                "encoder.layers.11.self_attn.relative_attention_bias.weight": (320, 12),
                "encoder.layers.0.self_attn.grep_linear.weight": (8, 64),
                "encoder.layers.0.self_attn.grep_a": (1, 12, 1, 1), "encoder.layers.5.fc1.weight": (3072, 768),
                "encoder.layer_norm.weight": (768,), "predictor.weight": (527, 768)}
    assert {k: shapes.get(k) for k in expected} == expected
    assert len(shapes) == 5 + 2 + 5 + 20 * 12 and "patch_embedding.bias" not in shapes
    assert sum(p.numel() for p in enc.parameters()) == pytest.approx(90.6e6, rel=0.01)
    assert enc.frame_hop == 2560 and enc.min_samples == 2800


def test_training_gradients_match_the_official_code(reference: types.ModuleType, tmp_path: Path) -> None:
    """Train mode without dropout: same loss and gradients, layer-wise gradient decay (0.6) included."""
    cfg = dict(VARIANTS["deepnorm_gated"], encoder_layerdrop=0.0)
    ref, ours = official_pair(reference, cfg, tmp_path / "beats.pt")
    ref.train(), ours.train()
    wave = torch.randn(2, SR) * 0.1
    tokens, _ = ref.extract_features(wave)
    tokens.view(2, -1, 8, 32).mean(dim=2).square().sum().backward()
    ours(wave)["frames"].square().sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, ref_params[name].grad, atol=1e-5, rtol=1e-4), name


def test_fbank_is_beats_own() -> None:
    """torchaudio's kaldi.fbank defaults as BEATs calls them; at 128 bins Kaldi would refuse the empty bin 3,
    torchaudio keeps it at the floor, and so must the project's fbank."""
    assert (BEATS_FBANK.num_mel_bins, BEATS_FBANK.frame_length, BEATS_FBANK.frame_shift, BEATS_FBANK.fft_size) == \
        (128, 400, 160, 512)
    assert (BEATS_FBANK.window_type, BEATS_FBANK.preemphasis, BEATS_FBANK.remove_dc_offset, BEATS_FBANK.dither,
            BEATS_FBANK.low_freq, BEATS_FBANK.high_hz, BEATS_FBANK.waveform_scale) == \
        ("povey", 0.97, True, 0.0, 20.0, 8000.0, 2 ** 15)
    torch.manual_seed(5)
    x, counts = fbank(torch.randn(1, 8000) * 0.1, None, BEATS_FBANK)
    floored = (x[0] == torch.tensor(LOG_FLOOR).log()).all(dim=0)  # every frame at the floor
    assert x.shape == (1, 48, 128) and counts.tolist() == [48] and floored.nonzero().flatten().tolist() == [3]
