"""Scenes of the synthetic corpus: what sounds where (sampling and layout), and their rendering to a waveform.

A scene is a JSON-ready dict with fixed keys::

    {"duration": s, "background": {"colour", "level_db", "noticeable"},
     "events": [{"type", "onset", "offset", "loudness", "level_db", "pitch", "f0", "count", "n_units",
                 "unit_onsets", "unit", "length", "fade", "spans_clip"}, ...],   # in narration order
     "relations": ["then" | "while", ...]}                                        # events[i] -> events[i + 1]

"then": events[i + 1] starts at least 0.3 s after events[i] ends; "while": the two overlap in time.
Captions are written from the scene alone, so every attribute a caption may state is decided here, with
margins that make it audible: loud and quiet events are >= 15 dB apart, high and low pitch > 2x apart.
"""
from __future__ import annotations

import numpy as np

from .events import EVENT_TYPES, PITCH_RANGES, get_event_type
from .signals import ambience, fade_envelope, set_level

MIN_DURATION, MAX_DURATION = 3.0, 20.0
LEVELS_DB = {"quiet": -32.0, "normal": -22.0, "loud": -14.0}  # active level, jittered by +-1.5 dB
LENGTHS_S = {"short": (0.8, 2.0), "medium": (2.5, 3.5), "long": (4.5, 10.0)}
NOTICEABLE_P = 0.35  # share of scenes whose background ambience is loud enough to mention
MIN_GAP_S = 0.25  # sounds closer than this in time count as one episode (a "then" relation leaves >= 0.3 s)


def sample_event(rng: np.random.Generator, type_name: str, fixed: dict | None = None) -> dict:
    """An event of type_name with random attributes (those in fixed are imposed); onset/offset relative to 0."""
    et = get_event_type(type_name)
    fixed = fixed or {}
    ev: dict = {"type": type_name}
    ev["loudness"] = fixed.get("loudness") or str(rng.choice(["quiet", "normal", "loud"], p=[0.3, 0.4, 0.3]))
    ev["level_db"] = LEVELS_DB[ev["loudness"]] + rng.uniform(-1.5, 1.5)
    ev["pitch"], ev["f0"] = None, None
    if et.pitched:
        ev["pitch"] = fixed.get("pitch") or str(rng.choice(["low", "medium", "high"], p=[0.35, 0.3, 0.35]))
        ev["f0"] = et.f0_base * rng.uniform(*PITCH_RANGES[ev["pitch"]])
    ev["count"], ev["n_units"], ev["unit_onsets"], ev["unit"], ev["length"], ev["fade"] = (None,) * 6
    if et.countable:
        label = fixed.get("count") or str(rng.choice(["1", "2", "3", "several"], p=[0.25, 0.3, 0.25, 0.2]))
        n_units = int(rng.integers(5, 8)) if label == "several" else int(label)
        unit = rng.uniform(*et.unit)
        period = unit + rng.uniform(*et.gap)
        steps = period * rng.uniform(0.93, 1.07, n_units - 1)
        onsets = np.concatenate([[0.0], np.cumsum(steps)])
        ev.update(count=label, n_units=n_units, unit_onsets=[round(float(o), 4) for o in onsets], unit=unit)
        span = float(onsets[-1]) + unit + et.tail
    else:
        ev["length"] = fixed.get("length") or str(rng.choice(["short", "medium", "long"], p=[0.35, 0.2, 0.45]))
        if fixed.get("fade") and ev["length"] == "short":  # a fade needs time to be heard
            ev["length"] = "long"
        span = rng.uniform(*LENGTHS_S[ev["length"]])
        if "fade" in fixed:
            ev["fade"] = fixed["fade"]
        elif ev["length"] != "short":
            ev["fade"] = [None, "in", "out"][rng.choice(3, p=[0.6, 0.2, 0.2])]
    ev["onset"], ev["offset"] = 0.0, span
    return ev


def _layout(rng: np.random.Generator, events: list[dict], relations: list[str]) -> float:
    """Place events in time (in place) following relations; returns the clip duration in seconds."""
    for prev, cur, rel in zip(events, events[1:], relations):
        lp, lc = prev["offset"] - prev["onset"], cur["offset"] - cur["onset"]
        if rel == "then":
            start = prev["offset"] + rng.uniform(0.3, 1.5)
        elif lc <= lp - 0.4:  # cur inside prev
            start = prev["onset"] + rng.uniform(0.2, lp - lc - 0.2)
        elif lp <= lc - 0.4:  # prev inside cur
            start = prev["onset"] - rng.uniform(0.2, lc - lp - 0.2)
        else:  # similar lengths: staggered overlap
            start = prev["onset"] + rng.uniform(0.0, 0.3 * lp)
        cur["onset"], cur["offset"] = start, start + lc
    shift = rng.uniform(0.2, 2.0) - min(e["onset"] for e in events)
    for e in events:
        e["onset"], e["offset"] = round(e["onset"] + shift, 4), round(e["offset"] + shift, 4)
    duration = max(MIN_DURATION, max(e["offset"] for e in events) + rng.uniform(0.3, 2.5))
    _mark_spans(events, duration)
    return round(duration, 3)


def _mark_spans(events: list[dict], duration: float) -> None:
    """Whether each event lasts (nearly) the whole clip, which a caption may say ("throughout")."""
    for e in events:
        e["spans_clip"] = bool(e["offset"] - e["onset"] >= 0.8 * duration)


def episodes(events: list[dict]) -> list[list[int]]:
    """Indices of events grouped into episodes, in time order: runs of sounds that overlap (or are less than
    MIN_GAP_S apart). An episode of one event is a sound heard on its own."""
    groups: list[list[int]] = []
    end = 0.0  # when the current episode's last sound ends
    for i in sorted(range(len(events)), key=lambda k: events[k]["onset"]):
        if groups and events[i]["onset"] < end + MIN_GAP_S:
            groups[-1].append(i)
            end = max(end, events[i]["offset"])
        else:
            groups.append([i])
            end = events[i]["offset"]
    return groups


def stretch_scene(rng: np.random.Generator, scene: dict, duration: float) -> dict:
    """The scene as a long clip of ``duration`` seconds (in place): its episodes keep their own timing and order,
    and the extra time goes to the silences before, between and after them (shares drawn at random), so every
    relation, count and order a caption or question states stays true. A scene already as long is unchanged."""
    events = scene["events"]
    extra = duration - scene["duration"]
    if extra <= 0:
        return scene
    groups = episodes(events)
    shares = np.cumsum(rng.dirichlet(np.ones(len(groups) + 1)))[:-1]  # the shift of each episode, as a share
    for group, share in zip(groups, shares):
        for i in group:
            events[i]["onset"] = round(float(events[i]["onset"] + share * extra), 4)
            events[i]["offset"] = round(float(events[i]["offset"] + share * extra), 4)
    scene["duration"] = round(duration, 3)
    _mark_spans(events, duration)
    return scene


EVENTS_PER_SCENE = (0.3, 0.45, 0.25)  # chance of 1, 2, 3 events
FAVOURED = 4.0  # how much likelier a favoured event type is to occur (a corpus's event mix, see `event_chances`)


def event_chances(max_events: int = 3, favour: tuple[str, ...] = ()) -> tuple[list[float], list[float]] | None:
    """A corpus's event mix as sampling chances: (of 1..max_events events per scene, of each type in sorted order),
    the favoured types ``FAVOURED`` times as likely as the others; None for the default mix, which keeps the default
    corpus's random draws (and files) unchanged."""
    if max_events == len(EVENTS_PER_SCENE) and not favour:
        return None
    if not 1 <= max_events <= len(EVENTS_PER_SCENE):
        raise ValueError(f"Invalid max_events. (expected 1 to {len(EVENTS_PER_SCENE)}, found {max_events})")
    unknown = sorted(set(favour) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"Invalid favour. (unknown event types {unknown}; valid: {sorted(EVENT_TYPES)})")
    counts = np.asarray(EVENTS_PER_SCENE[:max_events])
    types = np.asarray([FAVOURED if t in favour else 1.0 for t in sorted(EVENT_TYPES)])
    return [float(x) for x in counts / counts.sum()], [float(x) for x in types / types.sum()]


def sample_scene(rng: np.random.Generator, types: list[str] | None = None, fixed: dict | None = None,
                 chances: tuple[list[float], list[float]] | None = None) -> dict:
    """A random scene of 1-3 events (or of the given types, shuffled); fixed attributes apply to the first type;
    ``chances`` (:func:`event_chances`) changes the event mix of random scenes.

    Scenes longer than MAX_DURATION are redrawn, so durations always lie in [3, 20] s.
    """
    for _ in range(100):
        if types is None and chances is None:
            k = int(rng.choice([1, 2, 3], p=list(EVENTS_PER_SCENE)))
            names = [str(x) for x in rng.choice(sorted(EVENT_TYPES), size=k, replace=False)]
        elif types is None:
            k = int(rng.choice(np.arange(1, len(chances[0]) + 1), p=chances[0]))
            names = [str(x) for x in rng.choice(sorted(EVENT_TYPES), size=k, replace=False, p=chances[1])]
        else:
            names = list(types)
        events = [sample_event(rng, nm, fixed if i == 0 else None) for i, nm in enumerate(names)]
        order = rng.permutation(len(events))
        events = [events[i] for i in order]
        relations = [str(rng.choice(["then", "while"])) for _ in events[1:]]
        duration = _layout(rng, events, relations)
        if duration <= MAX_DURATION:
            break
    else:  # pragma: no cover - the draw above is far below 20 s almost always
        raise RuntimeError("could not sample a scene shorter than 20 s")
    noticeable = bool(rng.random() < NOTICEABLE_P)
    background = {"colour": str(rng.choice(["white", "pink", "brown"])),
                  "level_db": round(rng.uniform(-44, -40) if noticeable else rng.uniform(-62, -54), 2),
                  "noticeable": noticeable}
    return {"duration": duration, "background": background, "events": events, "relations": relations}


def render_event(rng: np.random.Generator, event: dict, sr: int) -> np.ndarray:
    """The waveform [offset - onset seconds * sr] of one event at its level, with its fade applied."""
    et = get_event_type(event["type"])
    n = int(round((event["offset"] - event["onset"]) * sr))
    onsets = np.round(np.asarray(event["unit_onsets"] or [], dtype=np.float64) * sr).astype(int)
    x = et.render(rng, sr, n, event["f0"], onsets, event["unit"] or 0.0)
    x = x * fade_envelope(n, event["fade"])
    return set_level(x, sr, event["level_db"])


def render_scene(rng: np.random.Generator, scene: dict, sr: int) -> np.ndarray:
    """Mix of background and events [round(duration * sr)], float64, peak kept below 0.98 (no clipping)."""
    n = int(round(scene["duration"] * sr))
    bg = scene["background"]
    mix = ambience(rng, n, sr, bg["colour"], bg["level_db"])
    for ev in scene["events"]:
        x = render_event(rng, ev, sr)
        start = int(round(ev["onset"] * sr))
        m = min(x.size, n - start)
        mix[start:start + m] += x[:m]
    peak = np.abs(mix).max()
    if peak > 0.98:  # scale the whole mix so relative levels (loud vs quiet) survive
        mix *= 0.98 / peak
    return mix


def combinations(scene: dict) -> list[str]:
    """Facts a caption can state as combinations, e.g. 'bell:pitch=high' and 'bird+rain' (sorted, unique)."""
    out = set()
    for ev in scene["events"]:
        t = ev["type"]
        if ev["pitch"] in ("low", "high"):
            out.add(f"{t}:pitch={ev['pitch']}")
        if ev["loudness"] in ("loud", "quiet"):
            out.add(f"{t}:loudness={ev['loudness']}")
        if ev["count"] is not None:
            out.add(f"{t}:count={ev['count']}")
        if ev["length"] in ("short", "long"):
            out.add(f"{t}:length={ev['length']}")
        if ev["fade"] is not None:
            out.add(f"{t}:fade={ev['fade']}")
    types = sorted(ev["type"] for ev in scene["events"])
    out.update(f"{a}+{b}" for i, a in enumerate(types) for b in types[i + 1:])
    return sorted(out)
