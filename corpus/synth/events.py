"""The sound-event types of the synthetic corpus and their synthesis recipes.

Each type has a signature a listener would name (a bird chirp is a fast rising sweep with a warble, a bell a set of
inharmonic slowly decaying partials, babble is formant-filtered glottal pulses in syllables, ...). A renderer has
one signature, ``render(rng, sr, n, f0, onsets, unit) -> [n]``: ``f0`` is the pitch in Hz (None for unpitched
types), ``onsets`` the start samples of the repetitions of a countable event (empty for continuous ones) and
``unit`` the length in seconds of one repetition. Output scale is arbitrary; levels are set by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from .signals import coloured_noise, decay, harmonics, overlay, phase, ramp, smooth_random

Renderer = Callable[[np.random.Generator, int, int, "float | None", np.ndarray, float], np.ndarray]


def _beep(rng, sr, n, f0, onsets, unit):
    m = int(unit * sr)
    t = np.arange(m) / sr
    u = (np.sin(2 * np.pi * f0 * t) + 0.15 * np.sin(4 * np.pi * f0 * t)) * ramp(m, sr, 0.005, 0.008)
    return overlay(n, onsets, [u] * len(onsets))


def _bird(rng, sr, n, f0, onsets, unit):
    units = []
    for _ in onsets:
        m = int(unit * rng.uniform(0.85, 1.15) * sr)
        x = np.arange(m) / m
        f = f0 * rng.uniform(0.97, 1.03) * (0.75 + 0.5 * x) * (1 + 0.07 * np.sin(2 * np.pi * 38 * x * m / sr))
        units.append(harmonics(phase(f, sr, m), [1.0, 0.25], f.max(), sr) * np.sin(np.pi * x) ** 2)
    return overlay(n, onsets, units)


def _siren(rng, sr, n, f0, onsets, unit):
    t = np.arange(n) / sr
    rate = rng.uniform(0.25, 0.5)
    if rng.random() < 0.5:  # slow wail
        f = f0 * (1 + 0.3 * np.sin(2 * np.pi * rate * t - np.pi / 2))
    else:  # two-tone hi-lo
        f = f0 * (1 + 0.17 * (1 + np.tanh(8 * np.sin(2 * np.pi * 2 * rate * t))))
    return harmonics(phase(f, sr, n), [1.0, 0.5, 0.33, 0.25, 0.2, 0.14], f.max(), sr) * ramp(n, sr, 0.1, 0.1)


def _knock(rng, sr, n, f0, onsets, unit):
    units = []
    for _ in onsets:
        m = int(0.15 * sr)
        t = np.arange(m) / sr
        body = np.sin(2 * np.pi * rng.uniform(150, 260) * t) * decay(m, sr, rng.uniform(0.015, 0.03))
        click = coloured_noise(rng, m, sr, 400, 2500) * decay(m, sr, 0.006)
        units.append((body + 0.6 * click) * rng.uniform(0.85, 1.0))
    return overlay(n, onsets, units)


def _engine(rng, sr, n, f0, onsets, unit):
    f = f0 * (1 + 0.02 * smooth_random(rng, n, sr, 0.7))
    ph = phase(f, sr, n)
    tone = harmonics(ph, [1.0 / k ** 0.7 for k in range(1, 41)], f.max(), sr)
    tone *= 1 + 0.3 * np.sin(ph / 2)  # firing-rate throb
    rumble = coloured_noise(rng, n, sr, 20, 300, tilt=1.0)
    return (tone + 0.3 * tone.std() * rumble) * ramp(n, sr, 0.2, 0.2)


def _rain(rng, sr, n, f0, onsets, unit):
    from scipy import signal as sps  # here, not at import: it takes a second to import
    drops = np.zeros(n)
    k = rng.poisson(rng.uniform(400, 1200) * n / sr)
    np.add.at(drops, rng.integers(0, n, k), rng.lognormal(0.0, 0.6, k) * rng.choice([-1, 1], k))
    m = int(0.006 * sr)
    kernel = coloured_noise(rng, m, sr, 2000, 7000) * decay(m, sr, 0.0015)
    patter = sps.fftconvolve(drops, kernel)[:n]
    hiss = coloured_noise(rng, n, sr, 800, None, tilt=1.0)
    return (patter / (patter.std() + 1e-12) + 0.5 * hiss) * ramp(n, sr, 0.3, 0.3)


def _wind(rng, sr, n, f0, onsets, unit):
    gust = 0.55 + 0.45 * smooth_random(rng, n, sr, rng.uniform(0.6, 1.2))
    body = coloured_noise(rng, n, sr, 30, 1500, tilt=1.5)
    howl = coloured_noise(rng, n, sr, 350, 800)
    return (body * gust + 0.4 * howl * gust ** 3) * ramp(n, sr, 0.5, 0.5)


_BELL_PARTIALS = np.array([0.5, 1.0, 1.2, 1.5, 2.0, 2.5, 2.67, 3.0])
_BELL_AMPS = np.array([0.6, 1.0, 0.7, 0.4, 0.8, 0.3, 0.25, 0.2])


def _bell(rng, sr, n, f0, onsets, unit):
    m = int(2.0 * sr)
    t = np.arange(m) / sr
    u = np.zeros(m)
    for r, a in zip(_BELL_PARTIALS, _BELL_AMPS):
        if r * f0 < 0.45 * sr:
            u += a * np.sin(2 * np.pi * r * f0 * t) * np.exp(-t * 1.5 * r ** 0.6)
    u *= ramp(m, sr, 0.002, 0.05)
    return overlay(n, onsets, [u * rng.uniform(0.85, 1.0) for _ in onsets])


def _whistle(rng, sr, n, f0, onsets, unit):
    units = []
    for _ in onsets:
        m = int(unit * sr)
        t = np.arange(m) / sr
        f = f0 * (1 + 0.025 * np.sin(2 * np.pi * 5.5 * t)) * (1 - 0.1 * np.exp(-t / 0.03))
        breath = coloured_noise(rng, m, sr, 0.8 * f0, 1.25 * f0)
        units.append((np.sin(phase(f, sr, m)) + 0.12 * breath) * ramp(m, sr, 0.04, 0.06))
    return overlay(n, onsets, units)


def _buzz(rng, sr, n, f0, onsets, unit):
    f = f0 * (1 + 0.04 * smooth_random(rng, n, sr, 3.0))
    saw = harmonics(phase(f, sr, n), [1.0 / k for k in range(1, 31)], f.max(), sr)
    flutter = 1 + 0.25 * np.sin(2 * np.pi * rng.uniform(8, 15) * np.arange(n) / sr) * smooth_random(rng, n, sr, 1)
    return saw * flutter * ramp(n, sr, 0.05, 0.05)


def _footsteps(rng, sr, n, f0, onsets, unit):
    period = rng.uniform(0.45, 0.65)
    starts = np.arange(rng.uniform(0, 0.15), n / sr - 0.1, period) + rng.uniform(-0.03, 0.03, 1)
    starts = (np.clip(starts, 0, None) * sr).astype(int)
    m = int(0.12 * sr)
    t = np.arange(m) / sr
    grit = coloured_noise(rng, m * len(starts) + 1, sr, 800, 5000)
    units = []
    for i in range(len(starts)):
        thud = np.sin(2 * np.pi * rng.uniform(70, 100) * t) * decay(m, sr, 0.03)
        scuff = grit[i * m:(i + 1) * m] * decay(m, sr, 0.025)
        units.append((thud + 0.5 * scuff) * (1.0 if i % 2 else 0.8))
    return overlay(n, starts, units)


# vowel formants (F1, F2) in Hz: /a/, /i/, /u/, /e/, /o/
_VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (570, 840))


@lru_cache(maxsize=8)
def _formant_filters(sr: int) -> tuple[np.ndarray, ...]:
    from scipy import signal as sps  # here, not at import: it takes a second to import
    out = []
    for f1, f2 in _VOWELS:
        out.append(np.vstack([sps.butter(1, [0.8 * f, 1.2 * f], "bandpass", fs=sr, output="sos") for f in (f1, f2)]))
    return tuple(out)


def _babble(rng, sr, n, f0, onsets, unit):
    from scipy import signal as sps  # here, not at import: it takes a second to import
    filters = _formant_filters(sr)
    out = np.zeros(n)
    for _ in range(rng.integers(3, 5)):
        f = rng.uniform(100, 220) * (1 + 0.15 * smooth_random(rng, n, sr, 2.0))
        src = 2 * ((phase(f, sr, n) / (2 * np.pi)) % 1.0) - 1  # glottal pulses as a sawtooth
        pos = rng.uniform(0, 0.4)
        while pos < n / sr - 0.1:
            length = rng.uniform(0.12, 0.3)
            a, b = int(pos * sr), min(n, int((pos + length) * sr))
            syl = sps.sosfilt(filters[rng.integers(len(filters))], src[a:b]) * np.hanning(b - a) ** 0.5
            out[a:b] += syl * rng.uniform(0.5, 1.0)
            pos += length + (rng.uniform(0.1, 0.4) if rng.random() < 0.15 else 0.02)
    return out * ramp(n, sr, 0.1, 0.1)


def _bark(rng, sr, n, f0, onsets, unit):
    units = []
    for _ in onsets:
        m = int(unit * rng.uniform(0.85, 1.15) * sr)
        x = np.arange(m) / m
        f = f0 * (0.85 + 0.4 * np.exp(-x / 0.25))
        tone = harmonics(phase(f, sr, m), [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2], f.max(), sr)
        rough = coloured_noise(rng, m, sr, 400, 3000)
        env = x ** 0.3 * (1 - x) ** 1.5
        units.append((tone + 0.5 * rough) * env / env.max())
    return overlay(n, onsets, units)


def _horn(rng, sr, n, f0, onsets, unit):
    m = int(unit * sr)
    odd = [1.0 / k if k % 2 else 0.0 for k in range(1, 16)]
    # two horns a major third apart; the lower one leads, so the pitch heard is f0
    u = sum(a * harmonics(phase(f, sr, m), odd, f, sr) for a, f in ((1.0, f0), (0.6, 1.26 * f0)))
    u *= ramp(m, sr, 0.01, 0.03)
    return overlay(n, onsets, [u] * len(onsets))


@dataclass(frozen=True)
class EventType:
    """A sound-event type: how to render it and which attributes it has.

    countable types repeat ``unit`` seconds long sounds separated by ``gap`` seconds and have a count;
    continuous ones have a length and may fade. ``f0_base`` (Hz) of a pitched type is its low pitch: medium is
    1.5-1.65x and high 2.5-2.75x it, so high and low are always more than an octave apart.
    """

    name: str
    render: Renderer
    countable: bool
    f0_base: float | None = None
    unit: tuple[float, float] = (0.0, 0.0)
    gap: tuple[float, float] = (0.0, 0.0)
    tail: float = 0.0  # seconds a repetition rings on after its unit

    @property
    def pitched(self) -> bool:
        return self.f0_base is not None


EVENT_TYPES: dict[str, EventType] = {e.name: e for e in [
    EventType("beep", _beep, True, 500.0, (0.12, 0.3), (0.15, 0.4)),
    EventType("bird", _bird, True, 1400.0, (0.08, 0.18), (0.15, 0.45)),
    EventType("knock", _knock, True, None, (0.05, 0.05), (0.2, 0.4), tail=0.1),
    EventType("bell", _bell, True, 260.0, (0.05, 0.05), (0.6, 1.0), tail=1.5),
    EventType("whistle", _whistle, True, 700.0, (0.35, 0.8), (0.2, 0.45)),
    EventType("dog", _bark, True, 170.0, (0.12, 0.22), (0.2, 0.5)),
    EventType("horn", _horn, True, 280.0, (0.25, 0.7), (0.15, 0.35)),
    EventType("siren", _siren, False, 450.0),
    EventType("engine", _engine, False, 38.0),
    EventType("buzz", _buzz, False, 110.0),
    EventType("rain", _rain, False),
    EventType("wind", _wind, False),
    EventType("footsteps", _footsteps, False),
    EventType("babble", _babble, False),
]}

PITCH_RANGES = {"low": (1.0, 1.1), "medium": (1.5, 1.65), "high": (2.5, 2.75)}  # multiples of f0_base


def get_event_type(name: str) -> EventType:
    """The registered event type called name; KeyError listing the valid names otherwise."""
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown event type {name!r}; valid: {sorted(EVENT_TYPES)}") from None
