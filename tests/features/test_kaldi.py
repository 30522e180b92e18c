"""Kaldi fbank in torch: against kaldi-native-fbank (the reference), batching, short clips, options, bad input."""
from __future__ import annotations

import math
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from features.audio import load_audio
from features.kaldi import LOG_FLOOR, FbankConfig, fbank, num_frames

# Largest |ours - kaldi-native-fbank| allowed on the log scale, and the median. kaldi-native-fbank runs in float32
# (FFT and mel banks): in its lowest bins, which hold one or two FFT bins with energies ~1e-8 of the frame's, it
# strays up to ~5e-4 from float64 references on real audio; ours in float64 stays within 1e-6 of one (below).
MAX_LOG_DIFF, MEDIAN_LOG_DIFF = 1e-3, 1e-5


def reference(x: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """kaldi-native-fbank's features of one clip, (T, num_mel_bins)."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = cfg.sample_rate
    opts.frame_opts.frame_length_ms = cfg.frame_length_ms
    opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
    opts.frame_opts.window_type = cfg.window_type
    opts.frame_opts.preemph_coeff = cfg.preemphasis
    opts.frame_opts.remove_dc_offset = cfg.remove_dc_offset
    opts.frame_opts.round_to_power_of_two = cfg.round_to_power_of_two
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    opts.use_energy = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(cfg.sample_rate, (x * cfg.waveform_scale).astype(np.float32))
    online.input_finished()
    frames = [online.get_frame(i) for i in range(online.num_frames_ready)]
    return np.stack(frames) if frames else np.zeros((0, cfg.num_mel_bins), np.float32)


def float64_reference(x: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """The same recipe in float64 numpy, frame by frame (``transformers``' Kaldi-style spectrogram, what its AST
    extractor runs without torchaudio), (T, num_mel_bins)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    mel = mel_filter_bank(num_frequency_bins=cfg.fft_size // 2 + 1, num_mel_filters=cfg.num_mel_bins,
                          min_frequency=cfg.low_freq, max_frequency=cfg.high_hz, sampling_rate=cfg.sample_rate,
                          norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    window = window_function(cfg.frame_length, {"hanning": "hann"}.get(cfg.window_type, cfg.window_type),
                             periodic=False)
    return spectrogram(x.astype(np.float64) * cfg.waveform_scale, window, frame_length=cfg.frame_length,
                       hop_length=cfg.frame_shift, fft_length=cfg.fft_size, power=2.0, center=False,
                       preemphasis=cfg.preemphasis, mel_filters=mel, log_mel="log", mel_floor=LOG_FLOOR,
                       remove_dc_offset=cfg.remove_dc_offset, dtype=np.float64).T


def noise_and_tones(n: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Pink-ish noise, two steady tones and a chirp, with a DC offset and a silent gap: (n,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.05
    x = noise + 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 3100 * t)
    x += 0.1 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.02
    x[n // 3: n // 3 + sample_rate // 5] *= 0.01  # a quiet stretch
    return x.astype(np.float32)


def check_close(ours: torch.Tensor, ref: np.ndarray, what: str) -> float:
    assert ours.shape == ref.shape, what
    diff = np.abs(ours.double().numpy() - ref)
    assert diff.max() <= MAX_LOG_DIFF and np.median(diff) <= MEDIAN_LOG_DIFF, (what, diff.max(), np.median(diff))
    return float(diff.max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("window_type, scale, bins", [("povey", 2.0 ** 15, 80), ("hanning", 1.0, 80),
                                                      ("povey", 1.0, 23), ("hamming", 2.0 ** 15, 40)])
def test_matches_kaldi_native_fbank(window_type: str, scale: float, bins: int, dtype: torch.dtype) -> None:
    cfg = FbankConfig(num_mel_bins=bins, window_type=window_type, waveform_scale=scale)
    x = noise_and_tones(16000 * 3 + 123, 16000)
    ours, counts = fbank(torch.from_numpy(x).to(dtype)[None], None, cfg)
    assert ours.dtype == dtype and counts.tolist() == [1 + (len(x) - 400) // 160] == [299]
    check_close(ours[0], reference(x, cfg), f"{window_type} x{scale:g} {bins} bins {dtype}")


@pytest.mark.parametrize("sample_rate, bins, high_freq", [(16000, 80, 0.0), (44100, 64, -400.0), (32000, 64, 14000.0)])
def test_matches_kaldi_native_fbank_on_a_real_clip(clotho_mini: Path, sample_rate: int, bins: int,
                                                   high_freq: float) -> None:
    path = sorted((clotho_mini / "audio").glob("*.wav"))[0]
    x = load_audio(path, sample_rate)[: sample_rate * 6].astype(np.float32)
    cfg = FbankConfig(sample_rate=sample_rate, num_mel_bins=bins, high_freq=high_freq, waveform_scale=2.0 ** 15)
    ours, _ = fbank(torch.from_numpy(x)[None], None, cfg)
    check_close(ours[0], reference(x, cfg), f"{path.name} at {sample_rate} Hz")


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")  # bank 3 of 128, as in Kaldi
@pytest.mark.parametrize("window_type, scale", [("povey", 2.0 ** 15), ("hanning", 1.0), ("hamming", 1.0)])
def test_float64_matches_a_float64_reference(clotho_mini: Path, window_type: str, scale: float) -> None:
    """In float64 the recipe is exact: within 1e-6 of an independent float64 implementation. float32 is as good in
    the median, but a bin ~1e-8 below its frame's peak keeps only a few digits (up to ~3e-3 on quiet synthetic
    scenes)."""
    path = sorted((clotho_mini / "audio").glob("*.wav"))[1]
    x = load_audio(path, 16000)[: 16000 * 8].astype(np.float32)
    cfg = FbankConfig(num_mel_bins=128, window_type=window_type, waveform_scale=scale)
    ref = float64_reference(x, cfg)
    ours = fbank(torch.from_numpy(x).double()[None], None, cfg)[0][0].numpy()
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-6
    ours32 = fbank(torch.from_numpy(x)[None], None, cfg)[0][0].double().numpy()
    assert np.abs(ours32 - ref).max() <= 1e-2 and np.median(np.abs(ours32 - ref)) <= MEDIAN_LOG_DIFF


def test_other_frame_settings_match() -> None:
    cfg = FbankConfig(sample_rate=8000, num_mel_bins=30, frame_length_ms=30.0, frame_shift_ms=15.0, low_freq=60.0,
                      preemphasis=0.5, remove_dc_offset=False, round_to_power_of_two=False)
    assert (cfg.frame_length, cfg.frame_shift, cfg.fft_size) == (240, 120, 240)
    x = noise_and_tones(8000 * 2 + 37, 8000, seed=1)
    check_close(fbank(torch.from_numpy(x)[None], None, cfg)[0][0], reference(x, cfg), "8 kHz, odd settings")


def test_batched_equals_alone_and_padding_is_zero() -> None:
    cfg = FbankConfig(num_mel_bins=64, waveform_scale=2.0 ** 15)
    lengths = [16000 * 2 + 5, 16000 + 7, 400, 399, 560, 1]  # exactly one frame, one short of it, two frames
    batch = torch.from_numpy(np.stack([noise_and_tones(lengths[0], 16000, seed=s) for s in range(len(lengths))]))
    out, counts = fbank(batch, torch.tensor(lengths), cfg)  # rows keep audio past their lengths: it must not leak
    assert counts.tolist() == [198, 98, 1, 0, 2, 0] == num_frames(torch.tensor(lengths), cfg).tolist()
    assert out.shape == (6, 198, 64)
    for i, n in enumerate(lengths):
        alone, c = fbank(batch[i:i + 1, :n].clone(), None, cfg)
        t = int(counts[i])
        assert alone.shape == (1, t, 64) and int(c) == t
        torch.testing.assert_close(out[i, :t], alone[0], rtol=0, atol=1e-5)
        assert not out[i, t:].any()  # frames past a clip's count are 0


def test_clips_shorter_than_one_frame_give_zero_frames() -> None:
    cfg = FbankConfig()
    out, counts = fbank(torch.randn(3, 399), torch.tensor([399, 10, 0]), cfg)
    assert out.shape == (3, 0, 23) and counts.tolist() == [0, 0, 0]
    assert reference(np.zeros(399, np.float32), cfg).shape == (0, 23)  # Kaldi agrees: no frame


def test_silence_is_the_log_floor_and_scale_is_a_shift() -> None:
    silent, _ = fbank(torch.zeros(1, 1600))
    assert torch.equal(silent, torch.full_like(silent, math.log(LOG_FLOOR)))
    x = torch.from_numpy(noise_and_tones(8000, 16000))[None].double()
    one, _ = fbank(x, None, FbankConfig(num_mel_bins=40))
    scaled, _ = fbank(x, None, FbankConfig(num_mel_bins=40, waveform_scale=2.0 ** 15))
    above = one > math.log(LOG_FLOOR) + 1.0  # the quiet stretch's lowest bins sit on the floor without the scale
    assert above.float().mean() > 0.95
    torch.testing.assert_close((scaled - one)[above], torch.full_like(one[above], 2 * math.log(2.0 ** 15)))


def test_dither_is_seeded_and_off_by_default() -> None:
    x = torch.from_numpy(noise_and_tones(4000, 16000))[None]
    cfg = FbankConfig(dither=1.0, waveform_scale=2.0 ** 15)
    a, _ = fbank(x, None, cfg, generator=torch.Generator().manual_seed(3))
    b, _ = fbank(x, None, cfg, generator=torch.Generator().manual_seed(3))
    c, _ = fbank(x, None, cfg, generator=torch.Generator().manual_seed(4))
    plain, _ = fbank(x, None, FbankConfig(waveform_scale=2.0 ** 15))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)
    assert torch.equal(plain, fbank(x, None, FbankConfig(waveform_scale=2.0 ** 15))[0])


def test_empty_mel_bank_is_the_floor_like_kaldi() -> None:
    """128 bins at 16 kHz (AST, BEATs) leave bank 3 without an FFT bin: Kaldi refuses, torchaudio and the
    transformers extractors give the log floor there; so do we."""
    x = torch.from_numpy(noise_and_tones(16000, 16000))[None]
    out, _ = fbank(x, None, FbankConfig(num_mel_bins=128))
    assert torch.equal(out[0, :, 3], torch.full_like(out[0, :, 3], math.log(LOG_FLOOR)))
    others = torch.cat([out[0, :, :3], out[0, :, 4:]], dim=1)
    assert (others > math.log(LOG_FLOOR)).any(dim=0).all()  # no other bank is empty
    with pytest.raises(ValueError, match="num_mel_bins"):
        reference(x[0].numpy(), FbankConfig(num_mel_bins=128))


def test_bad_input_and_options() -> None:
    with pytest.raises(ValueError, match="waveform"):
        fbank(torch.zeros(1600))
    with pytest.raises(ValueError, match="waveform"):
        fbank(torch.zeros(1, 1600, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths"):
        fbank(torch.zeros(2, 1600), torch.tensor([1600, 1601]))
    with pytest.raises(ValueError, match="lengths"):
        fbank(torch.zeros(2, 1600), torch.tensor([1600]))
    with pytest.raises(ValueError, match="high_freq"):
        FbankConfig(high_freq=9000.0)
    with pytest.raises(ValueError, match="low_freq"):
        FbankConfig(low_freq=8000.0)
    with pytest.raises(ValueError, match="window_type"):
        FbankConfig(window_type="blackman")
    with pytest.raises(ValueError, match="dither"):
        FbankConfig(dither=-1.0)
