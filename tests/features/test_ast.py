"""AST encoder against ``transformers``' own pipeline (``ASTFeatureExtractor`` + ``ASTModel`` /
``ASTForAudioClassification``) on folders saved like the published ones, long-audio windows, the patch grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel

from features.audio import load_audio
from features.encoders import build_audio_encoder
from features.encoders.ast import AST_MEAN, AST_STD, patch_grid
from features.weights import load_audio_encoder, save_audio_encoder

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
PARITY = 1e-4  # the brief's bar for hidden states and logits
SR = 16000


def clip(seconds: float, seed: int) -> np.ndarray:
    """Noise, a tone and a DC offset: (n,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    return (0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (300 + 500 * seed) * t) + 0.01).astype(np.float32)


def save_folder(folder: Path, head: bool, extractor: ASTFeatureExtractor | None = None, **config) -> torch.nn.Module:
    """A random AST saved with ``save_pretrained`` (and its extractor's ``preprocessor_config.json``)."""
    torch.manual_seed(0)
    cfg = ASTConfig(**TINY, **config, **({"num_labels": 7} if head else {}))
    model = (ASTForAudioClassification if head else ASTModel)(cfg).eval()
    model.save_pretrained(folder)
    if extractor is not None:
        extractor.save_pretrained(folder)
    return model


def reference(model: torch.nn.Module, extractor: ASTFeatureExtractor, x: np.ndarray) -> dict[str, torch.Tensor]:
    """transformers' outputs for one clip: input values, patch tokens averaged over frequency, pooled, logits."""
    values = extractor(x, sampling_rate=SR, return_tensors="pt")["input_values"]
    with torch.no_grad():
        if isinstance(model, ASTForAudioClassification):
            base, logits = model.audio_spectrogram_transformer(values), model(values).logits
        else:
            base, logits = model(values), None
    f, t = patch_grid(model.config)
    tokens = base.last_hidden_state[:, 2:]
    frames = tokens.reshape(1, f, t, -1).mean(dim=1)
    return {"input_values": values, "hidden": base.last_hidden_state[0], "frames": frames[0],
            "clip": base.pooler_output[0], "logits": None if logits is None else logits[0]}


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")  # bank 3 of 128: Kaldi's too
def test_published_layout_matches_transformers(tmp_path: Path) -> None:
    """128 bins x 1024 frames with a classification head, as MIT/ast-finetuned-audioset-10-10-0.4593 is saved."""
    model = save_folder(tmp_path / "ast", head=True)
    extractor = ASTFeatureExtractor()  # published settings: 128 bins, 1024 frames, AudioSet mean and std
    enc = build_audio_encoder("ast", pretrained=str(tmp_path / "ast")).eval()
    assert (enc.mean, enc.std, enc.frame_hop) == (AST_MEAN, AST_STD, 1600)
    # 3 s; 10.24 s: exactly 1024 fbank frames; 12 s: transformers keeps the first 1024 frames, our first window
    waves = [clip(3.0, 0)[:-13], clip(10.24 + 0.015, 1), clip(12.0, 2)]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(3, int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, :len(w)] = torch.from_numpy(w)
    with torch.no_grad():
        out = enc(batch, lengths)
        fb, counts = enc.fbank(batch, lengths)
    assert counts.tolist() == [298, 1024, 1198]
    for i, w in enumerate(waves):
        ref = reference(model, extractor, w)
        ours_values = enc.input_values(fb[i:i + 1, :1024])  # the first window's input
        torch.testing.assert_close(ours_values, ref["input_values"], rtol=0, atol=1e-5)
        with torch.no_grad():  # every hidden state of the first window, CLS and distillation tokens included
            hidden = enc.model(input_values=ours_values).last_hidden_state[0]
        torch.testing.assert_close(hidden, ref["hidden"], rtol=0, atol=PARITY)
        t = min(int(out["frame_lengths"][i]), 101)
        torch.testing.assert_close(out["frames"][i, :t], ref["frames"][:t], rtol=0, atol=PARITY)
        if i < 2:  # one window: the whole result is transformers'
            torch.testing.assert_close(out["clip"][i], ref["clip"], rtol=0, atol=PARITY)
            torch.testing.assert_close(out["logits"][i], ref["logits"], rtol=0, atol=PARITY)
    assert out["frame_lengths"].tolist() == [30, 101, 101 + 18] == enc.num_frames(lengths).tolist()


def test_long_audio_is_transformers_window_by_window(tmp_path: Path) -> None:
    """A clip of 2.3 windows: frames are transformers' frames of each window's audio, one after the other; clip and
    logits their means weighted by valid frames."""
    config = dict(num_mel_bins=32, max_length=128)
    model = save_folder(tmp_path / "ast", head=True, **config)
    extractor = ASTFeatureExtractor(**config)
    enc = build_audio_encoder("ast", pretrained=str(tmp_path / "ast")).eval()
    x = clip(3.0, 3)
    with torch.no_grad():
        out = enc(torch.from_numpy(x)[None])
    assert out["frame_lengths"].tolist() == [12 + 12 + 5]  # 298 fbank frames: 128 + 128 + 42 (ceil(42 / 10) = 5)
    hop = 128 * 160  # window k starts at fbank frame 128 k, that is at sample 128 k * 160
    refs = [reference(model, extractor, x[k * hop:]) for k in range(3)]
    expected = torch.cat([refs[0]["frames"], refs[1]["frames"], refs[2]["frames"][:5]])
    torch.testing.assert_close(out["frames"][0], expected, rtol=0, atol=PARITY)
    weights = torch.tensor([12.0, 12.0, 5.0])[:, None]  # patches starting on valid frames
    for key in ("clip", "logits"):
        mean = (torch.stack([r[key] for r in refs]) * weights).sum(0) / weights.sum()
        torch.testing.assert_close(out[key][0], mean, rtol=0, atol=PARITY)


def test_real_clip_and_folder_normalisation(tmp_path: Path, clotho_mini: Path) -> None:
    """A folder's preprocessor_config.json sets the normalisation (here not AudioSet's); saving keeps it all."""
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=256, mean=-6.845978, std=5.5654526)
    model = save_folder(tmp_path / "ast", head=False, extractor=extractor, num_mel_bins=64, max_length=256)
    enc = build_audio_encoder("ast", pretrained=str(tmp_path / "ast")).eval()
    assert (enc.mean, enc.std) == (-6.845978, 5.5654526) and "logits" not in enc(torch.zeros(1, 800))
    x = load_audio(sorted((clotho_mini / "audio").glob("*.wav"))[0], SR)[: int(SR * 2.5)]
    ref = reference(model, extractor, x)
    with torch.no_grad():
        out = enc(torch.from_numpy(x)[None])
    t = int(out["frame_lengths"][0])
    torch.testing.assert_close(out["frames"][0], ref["frames"][:t], rtol=0, atol=PARITY)
    torch.testing.assert_close(out["clip"][0], ref["clip"], rtol=0, atol=PARITY)
    save_audio_encoder(enc, tmp_path / "ast.pt")
    loaded = load_audio_encoder(tmp_path / "ast.pt")
    assert "pretrained" not in loaded.spec and (loaded.mean, loaded.std) == (enc.mean, enc.std)
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(x)[None])["clip"], out["clip"])


def test_classification_head_survives_saving(tmp_path: Path) -> None:
    save_folder(tmp_path / "ast", head=True, num_mel_bins=32, max_length=128)
    enc = build_audio_encoder("ast", pretrained=str(tmp_path / "ast")).eval()
    save_audio_encoder(enc, tmp_path / "ast.pt")
    loaded = load_audio_encoder(tmp_path / "ast.pt")
    assert loaded.spec["num_labels"] == 7
    wave = torch.from_numpy(clip(1.7, 4))[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave)["logits"], enc(wave)["logits"], rtol=0, atol=1e-6)
    random_head = build_audio_encoder("ast", num_labels=3, num_mel_bins=32, max_length=128, **TINY)
    assert random_head(wave)["logits"].shape == (1, 3)


def test_patch_stride_is_a_setting(tmp_path: Path) -> None:
    """SJTU's fstride = tstride = 16 on pretrained weights: position embeddings cropped about the centre, as AST's
    code does; a finer grid interpolates them; random init takes the strides as they are."""
    model = save_folder(tmp_path / "ast", head=False, num_mel_bins=48, max_length=128)
    pos = model.embeddings.position_embeddings.detach()  # (1, 2 + 4 * 12, H)
    assert patch_grid(model.config) == (4, 12)
    enc = build_audio_encoder("ast", pretrained=str(tmp_path / "ast"), frequency_stride=16, time_stride=16).eval()
    assert (enc.freq_patches, enc.time_patches, enc.frame_hop) == (3, 8, 16 * 160)
    new = enc.model.embeddings.position_embeddings.detach()
    grid = pos[0, 2:].reshape(4, 12, -1)
    torch.testing.assert_close(new[0, 2:].reshape(3, 8, -1), grid[1:4, 2:10], rtol=0, atol=0)
    torch.testing.assert_close(new[:, :2], pos[:, :2], rtol=0, atol=0)
    for name, p in model.state_dict().items():  # everything else is the folder's
        if "position_embeddings" not in name:
            assert torch.equal(enc.model.state_dict()[name], p), name
    wave = torch.from_numpy(clip(2.0, 5))[None]
    with torch.no_grad():
        out = enc(wave)
    assert out["frames"].shape == (1, 8 + 5, 32)  # 198 fbank frames: 128 + 70, ceil(70 / 16) = 5
    assert out["frame_lengths"].tolist() == enc.num_frames(torch.tensor([wave.shape[1]])).tolist() == [13]
    fine = build_audio_encoder("ast", pretrained=str(tmp_path / "ast"), time_stride=8).eval()
    assert fine.model.embeddings.position_embeddings.shape == (1, 2 + 4 * 15, 32)
    save_audio_encoder(fine, tmp_path / "fine.pt")
    assert load_audio_encoder(tmp_path / "fine.pt").spec["time_stride"] == 8
    sjtu = build_audio_encoder("ast", frequency_stride=16, time_stride=16, num_mel_bins=48, max_length=128, **TINY)
    assert (sjtu.freq_patches, sjtu.time_patches) == (3, 8)
    with pytest.raises(ValueError, match="patch grid"):
        build_audio_encoder("ast", pretrained=str(tmp_path / "ast"), hidden_size=64)
