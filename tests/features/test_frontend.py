"""Log-mel front end: PANNs settings, torchlibrosa equivalence, padding-exact batching, SpecAugment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from features.frontend import (LogMelFrontend, MelConfig, panns_mel_config, stft_frame_lengths,
                               waveform_to_logmel)


@pytest.fixture(scope="module")
def clip_32k(clotho_mini: Path) -> torch.Tensor:
    wav = sorted((clotho_mini / "audio").glob("*.wav"))[1]
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), sr, 32000)[: 4 * 32000]
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]


def test_presets_are_panns_settings() -> None:
    assert panns_mel_config() == MelConfig(32000, 1024, 320, 64, 50.0, 14000.0)
    assert panns_mel_config(16000) == MelConfig(16000, 512, 160, 64, 50.0, 8000.0)
    assert panns_mel_config(32000, mel_bins=128).mel_bins == 128
    with pytest.raises(ValueError, match="22050"):
        panns_mel_config(22050)
    with pytest.raises(ValueError, match="fmax"):
        MelConfig(fmax=20000.0)


def test_matches_torchlibrosa_centred(clip_32k: torch.Tensor) -> None:
    cfg = panns_mel_config()
    front = LogMelFrontend(cfg).eval()
    ref_spec = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True,
                           pad_mode="reflect", freeze_parameters=True)
    ref_mel = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-10,
                               top_db=None, freeze_parameters=True)
    with torch.no_grad():
        ours, lengths = front(clip_32k)
        ref = ref_mel(ref_spec(clip_32k))
    assert lengths is None
    assert ours.shape == ref.shape == (1, 1, 4 * 100 + 1, 64)
    assert (ours - ref).abs().max().item() < 1e-3  # dB values of magnitude ~100


def test_padded_batch_equals_alone(clip_32k: torch.Tensor) -> None:
    front = LogMelFrontend(panns_mel_config())
    spec, mel = front.spectrogram_extractor, front.logmel_extractor
    short = 32000 + 123
    batch = clip_32k.repeat(2, 1)  # second row keeps real audio past its length: must not leak
    lengths = torch.tensor([batch.shape[1], short])
    with torch.no_grad():
        x, frames = waveform_to_logmel(spec, mel, batch, lengths)
        alone, _ = waveform_to_logmel(spec, mel, clip_32k[:, :short].clone())
    assert frames.tolist() == stft_frame_lengths(lengths, 320).tolist() == [401, 101]
    assert alone.shape[2] == 101
    assert torch.equal(x[1, :, :101], alone[0])


def test_spec_augment_only_in_training(clip_32k: torch.Tensor) -> None:
    front = LogMelFrontend(panns_mel_config(), spec_augment=True)
    plain = LogMelFrontend(panns_mel_config())
    with torch.no_grad():
        reference, _ = plain(clip_32k)
        assert torch.equal(front.eval()(clip_32k)[0], reference)
        torch.manual_seed(0)
        augmented, _ = front.train()(clip_32k)
    assert augmented.shape == reference.shape
    assert (augmented == 0).sum() > (reference == 0).sum()  # dropped stripes are zeroed


def test_rejects_bad_waveform() -> None:
    front = LogMelFrontend(panns_mel_config())
    with pytest.raises(ValueError, match="expected \\(B, N\\)"):
        front(torch.zeros(32000))
