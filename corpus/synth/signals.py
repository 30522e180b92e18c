"""Signal building blocks of the synthetic corpus: noise, envelopes, levels and the background ambience.

All functions are vectorised over samples and return float64 mono arrays. Levels are measured one way only
(`active_level_db`), so "loud" and "quiet" in a caption mean the same thing for every event type.
"""
from __future__ import annotations

import numpy as np
from scipy import fft as sfft

TWO_PI = 2.0 * np.pi
FRAME_S = 0.05  # frame length of the level meter


def phase(freq: np.ndarray | float, sr: int, n: int) -> np.ndarray:
    """Running phase [n] in radians of an instantaneous frequency in Hz (scalar or [n])."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return TWO_PI * np.cumsum(f) / sr


def harmonics(ph: np.ndarray, amps: list[float] | np.ndarray, f_max: float, sr: int) -> np.ndarray:
    """Sum of sin(k * ph) * amps[k-1] [n], dropping partials whose top frequency would alias above 0.45 * sr."""
    # sin((k+1)x) = 2cos(x)sin(kx) - sin((k-1)x): one multiply-add per partial instead of a sin()
    out = np.zeros_like(ph)
    s_prev, s, c2 = np.zeros_like(ph), np.sin(ph), 2.0 * np.cos(ph)
    for k, a in enumerate(amps, start=1):
        if k * f_max >= 0.45 * sr:
            break
        if a:
            out += a * s
        s_prev, s = s, c2 * s - s_prev
    return out


def coloured_noise(rng: np.random.Generator, n: int, sr: int, lo: float = 20.0, hi: float | None = None,
                   tilt: float = 0.0) -> np.ndarray:
    """Unit-RMS noise [n] band-limited to [lo, hi] Hz with a power spectrum falling as 1/f**tilt.

    tilt 0 is white, 1 pink, 2 brown. Shaped in the frequency domain, so bands are brick-walls.
    """
    if n <= 0:
        return np.zeros(max(n, 0))
    m = sfft.next_fast_len(n, real=True)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    hi = 0.49 * sr if hi is None else min(hi, 0.49 * sr)
    gain = ((f >= lo) & (f <= hi)).astype(np.float64)
    if tilt:
        gain *= np.maximum(f, 1.0) ** (-tilt / 2.0)
    spec = rng.standard_normal(2 * f.size).view(np.complex128) * gain
    x = sfft.irfft(spec, m)[:n]
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


CONTROL_HZ = 200  # rate at which slow curves are computed before linear interpolation to audio rate


def _control_curve(rng: np.random.Generator, n_ctrl: int, rate_hz: float) -> np.ndarray:
    """Random knots every 1/rate_hz seconds, cosine-interpolated, sampled at CONTROL_HZ [n_ctrl], in [-1, 1]."""
    n_knots = int(np.ceil(n_ctrl / CONTROL_HZ * rate_hz)) + 2
    knots = rng.uniform(-1.0, 1.0, n_knots)
    pos = np.arange(n_ctrl) / CONTROL_HZ * rate_hz
    i = np.floor(pos).astype(int)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return knots[i] * (1 - w) + knots[i + 1] * w


def _to_audio_rate(ctrl: np.ndarray, n: int, sr: int) -> np.ndarray:
    return np.interp(np.arange(n) * (CONTROL_HZ / sr), np.arange(ctrl.size), ctrl)


def smooth_random(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Slowly varying random curve [n] in [-1, 1]: random knots every 1/rate_hz seconds, cosine-interpolated.

    Computed at CONTROL_HZ and linearly interpolated to sr; rate_hz stays far below CONTROL_HZ.
    """
    return _to_audio_rate(_control_curve(rng, int(np.ceil(n / sr * CONTROL_HZ)) + 2, rate_hz), n, sr)


def ramp(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack/release envelope [n] with the given times in seconds (shortened to fit n)."""
    env = np.ones(n)
    a = min(int(attack * sr), n // 2)
    r = min(int(release * sr), n // 2)
    if a > 0:
        env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if r > 0:
        env[n - r:] = np.linspace(1.0, 0.0, r)
    return env


def decay(n: int, sr: int, tau: float) -> np.ndarray:
    """Exponential decay envelope exp(-t / tau) [n]."""
    return np.exp(-np.arange(n) / (sr * tau))


def overlay(n: int, onsets: np.ndarray, units: list[np.ndarray]) -> np.ndarray:
    """Add each unit signal at its onset (samples) into a zero array [n], cutting what runs past the end."""
    out = np.zeros(n)
    for start, u in zip(onsets, units):
        start = int(start)
        if start >= n:
            continue
        m = min(u.size, n - start)
        out[start:start + m] += u[:m]
    return out


def fade_envelope(n: int, direction: str | None, depth_db: float = 30.0) -> np.ndarray:
    """Gain [n] rising ('in') or falling ('out') linearly in dB over the whole span by depth_db; ones for None."""
    if direction is None:
        return np.ones(n)
    db = np.linspace(-depth_db, 0.0, n) if direction == "in" else np.linspace(0.0, -depth_db, n)
    return 10.0 ** (db / 20.0)


def active_level_db(x: np.ndarray, sr: int) -> float:
    """Level of a sound while it sounds: the 95th percentile of 50 ms frame RMS, in dB re full scale.

    Using the loud frames rather than the mean keeps gaps between repetitions from lowering the level of a
    counted event, so a quiet bark and a quiet engine are equally quiet.
    """
    hop = max(1, int(FRAME_S * sr))
    n = (x.size // hop) * hop
    if n == 0:
        return 20 * np.log10(np.sqrt(np.mean(x * x)) + 1e-12)
    rms = np.sqrt(np.mean(x[:n].reshape(-1, hop) ** 2, axis=1))
    return float(20 * np.log10(np.percentile(rms, 95) + 1e-12))


def set_level(x: np.ndarray, sr: int, target_db: float) -> np.ndarray:
    """x rescaled so that `active_level_db` equals target_db."""
    return x * 10.0 ** ((target_db - active_level_db(x, sr)) / 20.0)


NOISE_TILT = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def ambience(rng: np.random.Generator, n: int, sr: int, colour: str, level_db: float) -> np.ndarray:
    """Background ambience [n]: noise of the given colour at RMS level_db, with slow +-2 dB drift."""
    x = coloured_noise(rng, n, sr, lo=30.0, tilt=NOISE_TILT[colour])
    drift_db = 2.0 * _control_curve(rng, int(np.ceil(n / sr * CONTROL_HZ)) + 2, 0.3) + level_db
    x *= _to_audio_rate(10.0 ** (drift_db / 20.0), n, sr)  # gain computed at control rate: cheap
    return x
