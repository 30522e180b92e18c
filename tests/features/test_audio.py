"""Audio reading: formats, resampling, down-mixing, and a clear AudioError for every kind of bad file."""
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from features.audio import (MIN_SECONDS, SILENCE_DBFS, SILENCE_PEAK, AudioError, check_duration, is_silent,
                            load_audio, min_samples, probe)


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def test_resample_keeps_frequency_amplitude_and_length(tmp_path: Path) -> None:
    path = tmp_path / "sine.wav"
    sf.write(path, sine(1000, 44100, 2.0), 44100, subtype="FLOAT")
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == round(2.0 * 16000)
    assert abs(dominant_freq(y, 16000) - 1000) <= 1.0
    middle = y[1600:-1600]  # away from the filter's edge transients
    assert np.abs(middle).max() == pytest.approx(0.5, rel=5e-3)
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=5e-3)


def test_no_resampling_at_native_rate_is_exact(tmp_path: Path) -> None:
    x = sine(440, 16000, 0.5)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav", 16000), x)


def test_channels_are_averaged(tmp_path: Path) -> None:
    left, right = sine(300, 16000, 0.5, 0.8), sine(700, 16000, 0.5, 0.2)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "st.wav", 16000), (left + right) / 2, atol=1e-7)


def test_96k_six_channels(tmp_path: Path) -> None:
    x = np.stack([sine(1000, 96000, 0.5, 0.1 * (c + 1)) for c in range(6)], axis=1)
    sf.write(tmp_path / "hi.wav", x, 96000, subtype="PCM_24")
    info = probe(tmp_path / "hi.wav")
    assert (info.sample_rate, info.channels, info.num_frames, info.subtype) == (96000, 6, 48000, "PCM_24")
    y = load_audio(tmp_path / "hi.wav", 32000)
    assert len(y) == 16000
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.35, rel=1e-2)  # mean of 0.1..0.6
    assert abs(dominant_freq(y, 32000) - 1000) <= 2.0


@pytest.mark.parametrize("subtype, tol", [("PCM_U8", 1 / 64), ("PCM_16", 1 / 16384), ("PCM_24", 1e-6),
                                          ("PCM_32", 1e-7), ("FLOAT", 0.0), ("DOUBLE", 1e-7)])
def test_wav_subtypes_load(tmp_path: Path, subtype: str, tol: float) -> None:
    x = sine(500, 8000, 0.25)
    sf.write(tmp_path / "s.wav", x, 8000, subtype=subtype)
    assert probe(tmp_path / "s.wav").subtype == subtype
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 8000), x, atol=tol)


def test_flac_round_trip(tmp_path: Path) -> None:
    x = sine(1000, 22050, 1.0)
    sf.write(tmp_path / "a.flac", x, 22050, subtype="PCM_16")
    info = probe(tmp_path / "a.flac")
    assert (info.format, info.num_frames) == ("FLAC", 22050)
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac", 22050), x, atol=1 / 16384)


def flac_stating_length(src: Path, dst: Path, total: int = 0) -> Path:
    """A copy of the FLAC ``src`` whose STREAMINFO states ``total`` samples (0: no length, which the format allows
    and some encoders and streams write).

    STREAMINFO is the first metadata block: after "fLaC" and its 4-byte block header come 10 bytes of block and frame
    sizes, then 64 bits: sample rate (20), channels - 1 (3), bits per sample - 1 (5), total samples (36).
    """
    data = bytearray(src.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, f"{src}: STREAMINFO is not the first block"
    at = 4 + 4 + 10
    fields = int.from_bytes(data[at:at + 8], "big")
    data[at:at + 8] = (fields >> 36 << 36 | total).to_bytes(8, "big")
    dst.write_bytes(bytes(data))
    return dst


def test_flac_without_stated_length_loads_as_the_original(tmp_path: Path) -> None:
    """libsndfile reports a FLAC whose STREAMINFO states 0 samples as SF_COUNT_MAX frames long (soundfile's read
    then fails with 'array is too big'); it is read through instead, to the very samples of the original. So is one
    whose header states more samples than the file could hold (a whole read would need 512 GiB)."""
    n = 22050 * 2 + 123  # not a whole number of blocks
    x = np.stack([sine(440, 22050, n / 22050, 0.4), sine(3000, 22050, n / 22050, 0.2)], axis=1)
    sf.write(tmp_path / "orig.flac", x, 22050, subtype="PCM_16")
    unknown = flac_stating_length(tmp_path / "orig.flac", tmp_path / "unknown.flac", 0)
    absurd = flac_stating_length(tmp_path / "orig.flac", tmp_path / "absurd.flac", (1 << 36) - 1)
    assert sf.info(str(unknown)).frames == 2 ** 63 - 1 and sf.info(str(absurd)).frames == (1 << 36) - 1
    ref = probe(tmp_path / "orig.flac")
    for path in (unknown, absurd):
        for rate in (22050, 16000):
            np.testing.assert_array_equal(load_audio(path, rate), load_audio(tmp_path / "orig.flac", rate))
        for scan in (False, True):  # read through either way: the duration written into manifests is the real one
            info = probe(path, scan=scan)
            assert (info.num_frames, info.duration, info.peak) == (n, n / 22050, ref.peak), (path, scan)
    assert len(load_audio(unknown, 22050, max_duration=n / 22050)) == n


def test_unknown_length_stops_at_max_duration_without_reading_it_all(tmp_path: Path) -> None:
    """``max_duration`` is enforced while reading a file of unknown length: it is refused after the first block
    instead of being decoded whole (60 s here: 7.7 MB as float64) on the header's silence."""
    sf.write(tmp_path / "long.flac", sine(440, 16000, 60.0), 16000, subtype="PCM_16")
    unknown = flac_stating_length(tmp_path / "long.flac", tmp_path / "unknown.flac")
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"unknown\.flac: too long: over 4\.1 s > max_duration 1 s \(its header "
                                             r"states no usable length; reading stopped there\)"):
            load_audio(unknown, 16000, max_duration=1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak} bytes traced: read more than a block or two"
    assert len(load_audio(unknown, 16000)) == 60 * 16000


def test_any_failure_reading_a_file_is_an_audio_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    """Whatever else fails on one file (out of memory, an error inside soundfile) is an AudioError naming the file
    and the reason, which commands report before going on with the other files."""
    sf.write(tmp_path / "a.wav", sine(440, 16000, 0.5), 16000)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 512. GiB for an array with shape (68719476735, 2)")

    def odd_header(*args, **kwargs):
        raise TypeError("unexpected header field")

    monkeypatch.setattr(sf, "read", out_of_memory)
    with pytest.raises(AudioError, match=r"a\.wav: cannot be read \(MemoryError: Unable to allocate 512\. GiB"):
        load_audio(tmp_path / "a.wav", 16000)
    monkeypatch.setattr(sf, "info", odd_header)
    with pytest.raises(AudioError, match=r"a\.wav: cannot be read \(TypeError: unexpected header field\)"):
        probe(tmp_path / "a.wav", scan=False)


def test_ogg_round_trip(tmp_path: Path) -> None:
    x = sine(1000, 32000, 1.0)
    sf.write(tmp_path / "a.ogg", x, 32000, format="OGG", subtype="VORBIS")
    y = load_audio(tmp_path / "a.ogg", 16000)
    assert len(y) == 16000
    assert abs(dominant_freq(y, 16000) - 1000) <= 1.0
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # lossy codec


def test_silence_is_valid_and_flagged(tmp_path: Path) -> None:
    sf.write(tmp_path / "quiet.wav", np.zeros(8000, np.float32), 16000)
    sf.write(tmp_path / "loud.wav", sine(100, 16000, 0.5), 16000)
    assert probe(tmp_path / "quiet.wav").silent and probe(tmp_path / "quiet.wav").peak == 0.0
    assert not probe(tmp_path / "loud.wav").silent
    assert load_audio(tmp_path / "quiet.wav", 16000).shape == (8000,)
    # below SILENCE_DBFS (-80 dBFS) counts as silent: e.g. 16-bit dither of one or two steps (-90 dBFS)
    assert SILENCE_DBFS == -80.0 and SILENCE_PEAK == pytest.approx(1e-4)
    dither = np.random.default_rng(0).integers(-2, 3, 8000).astype(np.float32) / 32768
    sf.write(tmp_path / "dither.wav", dither, 16000, subtype="PCM_16")
    sf.write(tmp_path / "faint.wav", sine(100, 16000, 0.5, amp=10 ** (-70 / 20)), 16000, subtype="PCM_16")
    assert probe(tmp_path / "dither.wav").silent and not probe(tmp_path / "faint.wav").silent
    assert is_silent(load_audio(tmp_path / "dither.wav", 16000)) and is_silent(np.zeros(4, np.float32))
    assert not is_silent(load_audio(tmp_path / "faint.wav", 16000))


def test_probe_matches_clotho_mini_clips(clotho_mini: Path) -> None:
    """Every clip of clotho_mini: 15-30 s, 44.1 kHz mono 16-bit, as soundfile reads it; exact where generated."""
    known = clotho_mini / "synth_metadata.json"  # only in the generated stand-in: each clip's planned duration
    planned = json.loads(known.read_text(encoding="utf-8")) if known.exists() else {}
    paths = sorted((clotho_mini / "audio").glob("*.wav"))
    assert len(paths) == 7 and any(" " in p.name for p in paths)
    for path in paths:
        info, ref = probe(path), sf.info(str(path))
        assert (info.num_frames, info.sample_rate, info.channels) == (ref.frames, ref.samplerate, ref.channels)
        assert (info.sample_rate, info.channels, info.subtype) == (44100, 1, "PCM_16")
        assert info.duration == pytest.approx(ref.frames / ref.samplerate) and 15.0 <= info.duration <= 30.0
        assert 0 < info.peak <= 1.0 and not info.silent
        if planned:
            assert info.num_frames == round(planned[path.name]["duration"] * 44100)
    y = load_audio(paths[0], 16000)
    assert abs(len(y) - probe(paths[0]).num_frames * 16000 / 44100) <= 1


def _wav_bytes(tmp_path: Path) -> bytes:
    sf.write(tmp_path / "src.wav", sine(440, 16000, 1.0), 16000, subtype="PCM_16")
    return (tmp_path / "src.wav").read_bytes()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected reason fragment)."""
    good = _wav_bytes(tmp_path)
    cases = {}
    cases["missing"] = (tmp_path / "nope.wav", "file not found")
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.wav", "empty file")
    (tmp_path / "text.wav").write_text("this is not audio\n")
    cases["text"] = (tmp_path / "text.wav", "not a readable audio file")
    (tmp_path / "header.wav").write_bytes(good[:30])
    cases["truncated header"] = (tmp_path / "header.wav", "not a readable audio file")
    (tmp_path / "cut.wav").write_bytes(good[: len(good) // 2])
    cases["truncated data"] = (tmp_path / "cut.wav", "truncated")
    sf.write(tmp_path / "full.flac", sine(440, 16000, 3.0), 16000)
    flac = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 2])
    cases["truncated flac"] = (tmp_path / "cut.flac", "corrupt data")
    unknown = flac_stating_length(tmp_path / "full.flac", tmp_path / "unknown.flac")  # no length, and cut short
    (tmp_path / "cut_unknown.flac").write_bytes(unknown.read_bytes()[: len(flac) // 2])
    cases["truncated flac without length"] = (tmp_path / "cut_unknown.flac", "corrupt data")
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, np.float32), 16000)
    cases["no samples"] = (tmp_path / "nosamples.wav", "no samples")
    nan = sine(440, 16000, 0.5)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    cases["nan"] = (tmp_path / "nan.wav", "non-finite")
    inf = sine(440, 16000, 0.5)
    inf[-1] = np.inf
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    cases["inf"] = (tmp_path / "inf.wav", "non-finite")
    return cases


def test_bad_files_raise_audio_error_naming_file_and_reason(tmp_path: Path) -> None:
    for name, (path, reason) in _bad_files(tmp_path).items():
        with pytest.raises(AudioError) as err:
            load_audio(path, 16000)
        assert str(path) in str(err.value) and reason in err.value.reason, name
        assert isinstance(err.value, ValueError)
        if name not in ("missing",):
            with pytest.raises(AudioError, match=reason):
                probe(path)


def click(sr: int, n: int) -> np.ndarray:
    """A short real-world-like sound: a decaying 3 kHz burst of ``n`` samples."""
    t = np.arange(n) / sr
    return (0.8 * np.exp(-t / 0.01) * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)


def test_short_clip_is_zero_padded_to_min_seconds(tmp_path: Path) -> None:
    """A 0.0437 s click (shorter than MIN_SECONDS) is kept: resampled as is, then zero-padded at its end."""
    sf.write(tmp_path / "click.wav", click(44100, 1929), 44100, subtype="PCM_16")
    assert probe(tmp_path / "click.wav").duration == pytest.approx(0.043741, abs=1e-6)
    raw = load_audio(tmp_path / "click.wav", 16000, pad_to=0)
    assert len(raw) == round(1929 * 16000 / 44100) == 700
    y = load_audio(tmp_path / "click.wav", 16000)
    assert MIN_SECONDS == 0.1 and len(y) == 1600 == min_samples(16000)
    np.testing.assert_array_equal(y[:700], raw)
    assert not y[700:].any() and np.abs(raw).max() > 0.5
    assert len(load_audio(tmp_path / "click.wav", 32000)) == 3200
    # clips of MIN_SECONDS or more are returned exactly as before: no padding
    sf.write(tmp_path / "tenth.wav", sine(440, 16000, 0.1), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "tenth.wav", 16000), sine(440, 16000, 0.1))
    # a single sample is audio too; no sample at all is not
    sf.write(tmp_path / "one.wav", np.full(1, 0.5, np.float32), 48000, subtype="FLOAT")
    assert len(load_audio(tmp_path / "one.wav", 16000)) == 1600
    sf.write(tmp_path / "none.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="none.wav: no samples"):
        load_audio(tmp_path / "none.wav", 16000)


def test_padded_minimum_runs_through_every_registered_encoder(tmp_path: Path) -> None:
    """MIN_SECONDS of audio (and less: each encoder pads to its own floor) gives finite frames from every encoder."""
    import torch

    from features.encoders import AUDIO_ENCODERS, build_audio_encoder
    from features.encoders.panns import PANNS_ARCHS

    small = {**{name: dict(width=0.25) for name in PANNS_ARCHS},  # others: their default size
             "ast": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_length=64, num_mel_bins=32),
             "beats": dict(input_patch_size=16, embed_dim=24, encoder_layers=1, encoder_embed_dim=32,
                           encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4)}
    sf.write(tmp_path / "click.wav", click(44100, 1929), 44100)
    for name in AUDIO_ENCODERS:
        torch.manual_seed(0)
        encoder = build_audio_encoder(name, **small.get(name, {})).eval()
        wave = torch.from_numpy(load_audio(tmp_path / "click.wav", encoder.sample_rate))
        assert len(wave) == min_samples(encoder.sample_rate)
        with torch.no_grad():
            out = encoder(wave[None])
            tiny = encoder(wave[None, :1])  # the encoders' own floor is lower still
        n = int(encoder.num_frames(torch.tensor([len(wave)]))[0])
        assert n >= 1 and out["frames"].shape == (1, n, encoder.frame_dim), name
        assert torch.isfinite(out["frames"]).all() and torch.isfinite(out["clip"]).all(), name
        assert torch.isfinite(tiny["clip"]).all(), name


def test_duration_limits_print_enough_digits(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", sine(440, 16000, 3.0), 16000)
    with pytest.raises(AudioError, match=r"too long: 3 s > max_duration 2 s"):
        load_audio(tmp_path / "long.wav", 16000, max_duration=2.0)
    assert len(load_audio(tmp_path / "long.wav", 16000, max_duration=3.0)) == 48000
    with pytest.raises(AudioError, match=r"too short: 0\.0437 s < min_duration 0\.05 s"):
        check_duration("x.wav", 1929 / 44100, 0.05, None)
    with pytest.raises(AudioError, match=r"too short: 0\.09998 s < min_duration 0\.1 s"):
        check_duration("x.wav", 4409 / 44100, 0.1, None)  # not "0.100 s < 0.1 s"
    with pytest.raises(AudioError, match=r"too long: 30\.00002 s > max_duration 30 s"):
        check_duration("x.wav", 1323001 / 44100, 0.0, 30.0)
    check_duration("x.wav", 0.01, 0.0, None)


def test_invalid_sample_rate(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", sine(440, 16000, 0.5), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(tmp_path / "a.wav", 0)
