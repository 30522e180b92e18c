"""Audio encoders: registry, contract, padding that does not leak, short and long audio."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from features.encoders import AUDIO_ENCODERS, AudioEncoder, build_audio_encoder
from features.weights import load_audio_encoder, save_audio_encoder

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

TINY_AST = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=128,
                num_mel_bins=32)
TINY_BEATS = dict(input_patch_size=16, embed_dim=24, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                  encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, deep_norm=True,
                  relative_position_embedding=True, gru_rel_pos=True)
TINY_HTSAT = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], classes_num=8)
SMALL = {name: {"ast": TINY_AST, "beats": TINY_BEATS, "htsat": TINY_HTSAT}.get(name, dict(width=0.25))
         for name in AUDIO_ENCODERS}


def small(name: str, **kwargs) -> AudioEncoder:
    torch.manual_seed(0)
    return build_audio_encoder(name, **SMALL[name], **kwargs).eval()


def test_registry_names_and_unknown() -> None:
    assert set(AUDIO_ENCODERS) == {"cnn14", "cnn10", "cnn6", "wavegram_logmel_cnn14", "ast", "beats", "htsat"}
    with pytest.raises(KeyError, match="cnn14.*cnn6|cnn6.*cnn14"):
        build_audio_encoder("cnn99")


@pytest.mark.parametrize("name", sorted(AUDIO_ENCODERS))
def test_contract(name: str) -> None:
    enc = small(name)
    assert isinstance(enc, AudioEncoder)
    assert enc.spec == {"name": name, **SMALL[name]}
    n = int(enc.sample_rate * 2.5)
    with torch.no_grad():
        out = enc(torch.randn(2, n) * 0.1)
    b, t, d = out["frames"].shape
    assert (b, d) == (2, enc.frame_dim) and out["clip"].shape == (2, enc.clip_dim)
    assert out["frame_lengths"].dtype == torch.long and out["frame_lengths"].tolist() == [t, t]
    assert t == int(enc.num_frames(torch.tensor([n]))) and abs(t - n / enc.frame_hop) <= 2
    assert torch.isfinite(out["frames"]).all() and torch.isfinite(out["clip"]).all()


def test_published_dimensions() -> None:
    assert build_audio_encoder("cnn14", width=0.25).frame_dim == 512
    cnn10 = build_audio_encoder("cnn10")
    assert (cnn10.frame_dim, cnn10.clip_dim, cnn10.frame_hop) == (512, 512, 320 * 16)
    assert build_audio_encoder("cnn14", sample_rate=16000, width=0.25).frame_hop == 160 * 32


@pytest.mark.parametrize("name", sorted(AUDIO_ENCODERS))
def test_padding_does_not_leak(name: str) -> None:
    enc = small(name)
    sr = enc.sample_rate
    torch.manual_seed(1)
    lengths = [int(sr * 2.3), int(sr * 1.1) + 7, 700]  # the last is shorter than one output frame
    batch = torch.randn(3, lengths[0]) * 0.1  # rows keep noise past their lengths: it must be ignored
    with torch.no_grad():
        out = enc(batch, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone = enc(batch[i:i + 1, :n].clone())
            t = int(out["frame_lengths"][i])
            assert alone["frames"].shape[1] == t >= 1
            assert torch.allclose(out["frames"][i, :t], alone["frames"][0], atol=1e-4, rtol=1e-4), name
            assert torch.allclose(out["clip"][i], alone["clip"][0], atol=1e-4, rtol=1e-4), name
            assert not out["frames"][i, t:].any()  # padded frames are zeros
    assert out["frame_lengths"].tolist() == enc.num_frames(torch.tensor(lengths)).tolist()


@pytest.mark.parametrize("name", ["cnn10", "ast"])
def test_long_audio_in_chunks(name: str) -> None:
    kwargs = {} if name == "ast" else dict(chunk_seconds=2.0)
    enc = small(name, **kwargs)
    sr = enc.sample_rate
    torch.manual_seed(2)
    n = int(sr * 5.3)
    wave = torch.randn(2, n) * 0.1
    lengths = torch.tensor([n, int(sr * 3.1)])
    with torch.no_grad():
        first = enc(wave, lengths)
        second = enc(wave, lengths)
        alone = enc(wave[1:, : int(lengths[1])].clone())
    assert torch.equal(first["frames"], second["frames"]) and torch.equal(first["clip"], second["clip"])
    counts = first["frame_lengths"].tolist()
    assert counts == enc.num_frames(lengths).tolist()
    # AST's windows hold a whole number of patches, so its frame rate is only nominally sr / frame_hop
    assert abs(counts[0] - n / enc.frame_hop) <= (2 if name == "cnn10" else 0.1 * n / enc.frame_hop)
    assert counts[0] > counts[1]
    assert torch.allclose(first["frames"][1, : counts[1]], alone["frames"][0], atol=1e-4)
    assert torch.allclose(first["clip"][1], alone["clip"][0], atol=1e-4)
    if name == "cnn10":  # windows fall on frame boundaries: same frame count as one pass
        whole = small(name)
        assert whole.num_frames(lengths).tolist() == counts


def test_spec_augment_changes_training_output_only() -> None:
    enc = small("cnn6", spec_augment=True)
    wave = torch.randn(1, 32000 * 3) * 0.1
    with torch.no_grad():
        a, b = enc(wave)["clip"], enc(wave)["clip"]
        enc.train()
        torch.manual_seed(0)
        c = enc(wave)["clip"]
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_bad_input_is_value_error() -> None:
    enc = small("cnn6")
    with pytest.raises(ValueError, match="waveform"):
        enc(torch.zeros(32000))
    with pytest.raises(ValueError, match="lengths"):
        enc(torch.zeros(2, 32000), torch.tensor([32000, 40000]))
    with pytest.raises(ValueError, match="width"):
        build_audio_encoder("cnn14", width=0)


def test_ast_local_pretrained_folder(tmp_path: Path) -> None:
    enc = small("ast")
    enc.model.save_pretrained(tmp_path / "ast")
    again = build_audio_encoder("ast", pretrained=str(tmp_path / "ast")).eval()
    wave = torch.randn(1, 16000 * 2) * 0.1
    with torch.no_grad():
        assert torch.allclose(enc(wave)["clip"], again(wave)["clip"], atol=1e-6)
    save_audio_encoder(again, tmp_path / "ast.pt")  # self-contained: stores the config, not the folder
    loaded = load_audio_encoder(tmp_path / "ast.pt")
    assert "pretrained" not in loaded.spec and loaded.spec["hidden_size"] == 32
    with torch.no_grad():
        assert torch.allclose(loaded(wave)["clip"], again(wave)["clip"], atol=1e-6)
    with pytest.raises(ValueError, match="missing_folder"):
        build_audio_encoder("ast", pretrained=str(tmp_path / "missing_folder"))
