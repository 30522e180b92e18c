"""The STFT and mel modules built without librosa equal torchlibrosa's and librosa's, bit for bit."""
import librosa
import numpy as np
import pytest
import torch
from torchlibrosa.stft import LogmelFilterBank as ReferenceLogmel
from torchlibrosa.stft import Spectrogram as ReferenceSpectrogram

from features.frontend import PANNS_MEL_PRESETS
from features.melbank import LogmelFilterBank, Spectrogram, mel_filterbank


@pytest.mark.parametrize("sample_rate", sorted(PANNS_MEL_PRESETS))
def test_weights_equal_torchlibrosas(sample_rate):
    p = PANNS_MEL_PRESETS[sample_rate]
    n_fft, hop = int(p["window_size"]), int(p["hop_size"])
    ours = {**Spectrogram(n_fft, hop).state_dict(),
            **LogmelFilterBank(sample_rate, n_fft, int(p["mel_bins"]), p["fmin"], p["fmax"]).state_dict()}
    reference = {**ReferenceSpectrogram(n_fft=n_fft, hop_length=hop, win_length=n_fft, window="hann", center=False,
                                        freeze_parameters=True).state_dict(),
                 **ReferenceLogmel(sr=sample_rate, n_fft=n_fft, n_mels=int(p["mel_bins"]), fmin=p["fmin"],
                                   fmax=p["fmax"], ref=1.0, amin=1e-10, top_db=None).state_dict()}
    assert list(ours) == list(reference) == ["stft.conv_real.weight", "stft.conv_imag.weight", "melW"]
    for name in ours:
        assert torch.equal(ours[name], reference[name]), name


@pytest.mark.parametrize("htk, norm", [(False, "slaney"), (True, None)])
def test_mel_filterbank_equals_librosas(htk, norm):
    for sample_rate, n_fft, n_mels, fmin, fmax in ((32000, 1024, 64, 50.0, 14000.0), (48000, 1024, 64, 50.0, 14000.0),
                                                   (16000, 512, 64, 0.0, 8000.0)):
        reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk,
                                        norm=norm)
        ours = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk=htk, norm=norm)
        assert ours.dtype == reference.dtype and np.array_equal(ours, reference)
    with pytest.raises(ValueError, match="norm"):
        mel_filterbank(32000, 1024, 64, 50.0, 14000.0, norm="l2")


def test_log_mel_equals_torchlibrosas():
    torch.manual_seed(0)
    wave = torch.randn(2, 32000)
    ours = LogmelFilterBank(32000, 1024, 64, 50.0, 14000.0)(Spectrogram(1024, 320)(wave))
    reference = ReferenceLogmel(sr=32000, n_fft=1024, n_mels=64, fmin=50.0, fmax=14000.0, ref=1.0, amin=1e-10,
                                top_db=None)(ReferenceSpectrogram(n_fft=1024, hop_length=320, win_length=1024,
                                                                  center=False)(wave))
    assert ours.shape == reference.shape == (2, 1, 97, 64) and torch.equal(ours, reference)
