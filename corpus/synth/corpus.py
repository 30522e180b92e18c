"""The synthetic corpus on disk: splits, held-out combinations, per-clip generation and Clotho-layout writing.

Layout written under ``out``::

    clotho_audio_<split>/synth_000123.wav      mono PCM 16-bit, for split in development, validation, evaluation
    clotho_captions_<split>.csv                file_name,caption_1..caption_5
    synth_metadata_<split>.json                file_name -> scene (events with type, attributes, onset/offset)
    synth_compositional_evaluation.csv         file_name,unseen_combinations: evaluation clips holding a
                                               combination (event-attribute or event pair) absent from development
    synth_corpus.json                          the settings and held-out combinations that made the corpus

Every clip depends only on (seed, clip index): its scene, audio and captions come from independent RNG streams
spawned from ``SeedSequence(seed, spawn_key=(index, stream))``, so the output is byte-identical for any number of
worker processes. Its questions and answers (:mod:`corpus.synth.questions`) come from one more stream, computed
from the metadata when the corpus is prepared. Files are written atomically (:mod:`common.io`); a rerun with the
same settings keeps finished clips and completes the rest.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import re
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.io import atomic_write, remove_stale_temps, write_csv, write_text_atomic

from .captions import caption_scene, words
from .events import EVENT_TYPES
from .scene import MAX_DURATION, combinations, event_chances, render_scene, sample_scene, stretch_scene

SPLITS = ("development", "validation", "evaluation")
SPLIT_SHARES = (0.70, 0.15, 0.15)
FORCED_SHARE = 0.4  # share of evaluation clips made to hold an unseen combination
N_HELDOUT_ATTRIBUTES, N_HELDOUT_PAIRS = 6, 6
FORMAT_VERSION = 1
SCENE, AUDIO, CAPTIONS, QUESTIONS = 0, 1, 2, 3  # RNG streams of a clip (questions: see questions.py)
PREFIX = "[A-Za-z0-9-]+"  # what may name a corpus's clips: <prefix>_000123.wav


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def all_combinations() -> list[str]:
    """Every combination a scene can hold, in the format of `scene.combinations`."""
    out = []
    for name, et in sorted(EVENT_TYPES.items()):
        values = [("loudness", "loud"), ("loudness", "quiet")]
        if et.pitched:
            values += [("pitch", "low"), ("pitch", "high")]
        if et.countable:
            values += [("count", c) for c in ("1", "2", "3", "several")]
        else:
            values += [("length", "short"), ("length", "long"), ("fade", "in"), ("fade", "out")]
        out += [f"{name}:{k}={v}" for k, v in values]
    names = sorted(EVENT_TYPES)
    out += [f"{a}+{b}" for i, a in enumerate(names) for b in names[i + 1:]]
    return out


def choose_heldout(seed: int) -> list[str]:
    """The combinations kept out of development and validation: attribute ones on distinct types, and pairs."""
    rng = _rng(seed, 0)  # a 1-element key never collides with the 2-element keys of clips
    combos = all_combinations()
    attrs = [c for c in combos if ":" in c]
    pairs = [c for c in combos if "+" in c]
    chosen, used_types = [], set()
    for i in rng.permutation(len(attrs)):
        t = attrs[i].split(":")[0]
        if t not in used_types and len(chosen) < N_HELDOUT_ATTRIBUTES:
            chosen.append(attrs[i])
            used_types.add(t)
    chosen += [pairs[i] for i in rng.permutation(len(pairs))[:N_HELDOUT_PAIRS]]
    return sorted(chosen)


def check_shares(shares: Sequence[float]) -> tuple[float, float, float]:
    """Development/validation/evaluation shares: three non-negative numbers summing to 1."""
    try:
        dev, val, ev = (float(x) for x in shares)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid shares. (expected 3 numbers for {'/'.join(SPLITS)}, found {shares!r})") from None
    if min(dev, val, ev) < 0 or abs(dev + val + ev - 1.0) > 1e-6:
        raise ValueError(f"Invalid shares. (expected 3 non-negative numbers summing to 1, found {shares!r})")
    return dev, val, ev


def assign_splits(n_clips: int, seed: int, shares: Sequence[float] = SPLIT_SHARES) -> list[tuple[str, bool]]:
    """(split, forced) per clip index, split sizes by ``shares`` (default 70/15/15), order by a seeded permutation;
    forced = must hold a held-out combination."""
    shares = check_shares(shares)
    n_dev = round(shares[0] * n_clips)
    n_val = min(round(shares[1] * n_clips), n_clips - n_dev)
    n_eval = n_clips - n_dev - n_val
    n_forced = int(np.ceil(FORCED_SHARE * n_eval))
    roles = [("development", False)] * n_dev + [("validation", False)] * n_val
    roles += [("evaluation", True)] * n_forced + [("evaluation", False)] * (n_eval - n_forced)
    perm = _rng(seed, 1).permutation(n_clips)
    return [roles[i] for i in perm]


def plan_clip(seed: int, index: int, forced: bool, heldout: list[str],
              durations: tuple[float, float] | None = None,
              chances: tuple[list[float], list[float]] | None = None) -> tuple[dict, list[str]]:
    """(scene, 5 captions) of clip index: forced clips hold a held-out combination, all others hold none.
    ``durations`` (min, max seconds): a long clip of a length drawn between them, its episodes spread over it;
    ``chances``: the event mix of scenes that are not forced (:func:`~corpus.synth.scene.event_chances`)."""
    rng = _rng(seed, index, SCENE)
    held = set(heldout)
    for _ in range(1000):
        if forced:
            combo = heldout[int(rng.integers(len(heldout)))]
            if "+" in combo:
                types = combo.split("+")
                fixed = None
            else:
                t, kv = combo.split(":")
                types, fixed = [t], dict([kv.split("=")])
            extra = [x for x in sorted(EVENT_TYPES) if x not in types]
            types += [str(x) for x in rng.choice(extra, size=int(rng.integers(0, 4 - len(types))), replace=False)]
            scene = sample_scene(rng, types, fixed)
            if combo in combinations(scene):
                break
        else:
            scene = sample_scene(rng, chances=chances)
            if not held.intersection(combinations(scene)):
                break
    else:  # pragma: no cover - rejection rates are a few percent
        raise RuntimeError(f"clip {index}: could not sample a scene that satisfies the held-out rule")
    if durations is not None:
        stretch_scene(rng, scene, float(rng.uniform(*durations)))
    return scene, caption_scene(scene, _rng(seed, index, CAPTIONS))


DEFAULT_PREFIX = "synth"


def file_name(index: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}_{index:06d}.wav"


def write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    """Write float samples [n] in [-1, 1] as mono PCM 16-bit, atomically."""
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    with atomic_write(path, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def make_clip(job: tuple) -> dict:
    """Plan, render and write one clip; returns its row: file_name, split, captions, scene, unseen combinations."""
    seed, index, split, forced, heldout, sr, out, prefix, durations, chances = job
    scene, caps = plan_clip(seed, index, forced, heldout, durations, chances)
    path = Path(out) / f"clotho_audio_{split}" / file_name(index, prefix)
    if not path.exists():  # finished by an earlier run with the same settings
        write_wav(path, render_scene(_rng(seed, index, AUDIO), scene, sr), sr)
    unseen = sorted(set(heldout).intersection(combinations(scene)))
    return {"file_name": file_name(index, prefix), "split": split, "captions": caps, "scene": scene, "unseen": unseen}


def _rounded(obj):
    """Floats rounded to 4 decimals, recursively, so metadata stays readable."""
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "synth_corpus.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != settings:
            raise ValueError(f"{out} already holds a synthetic corpus made with other settings "
                             f"({path}); choose another --out or delete it")
    for folder in [out] + [out / f"clotho_audio_{split}" for split in SPLITS]:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder, "*")  # temporary files of a killed run
    write_text_atomic(path, json.dumps(settings, indent=1) + "\n")


def make_corpus(out: str | Path, n_clips: int, seed: int = 0, sample_rate: int = 16000, workers: int = 2,
                progress: bool = True, shares: Sequence[float] = SPLIT_SHARES, prefix: str = DEFAULT_PREFIX,
                durations: Sequence[float] | None = None, max_events: int = 3,
                favour: Sequence[str] = ()) -> dict:
    """Generate the synthetic corpus under out (see module docstring) and return a summary. ``shares``: the
    development/validation/evaluation split sizes as fractions of ``n_clips``; ``prefix``: the clips' file names
    (``<prefix>_000123.wav``), so that two corpora of other seeds can be trained together with distinct ids;
    ``durations``: (min, max) seconds of long clips (e.g. 30 to 90 s, for long-audio handling), each clip's scene
    spread over a length drawn between them; by default clips last as long as their events (3 to 20 s);
    ``max_events`` (1-3) and ``favour`` (event types made 4x likelier) change the event mix, for a second corpus
    of another character (e.g. to pre-train on one corpus and fine-tune on another).

    Returns {"clips": {split: n}, "compositional": n, "duration_s": total audio seconds,
    "vocabulary": distinct caption words, "seconds": wall time}.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    if not re.fullmatch(PREFIX, prefix):
        raise ValueError(f"Invalid prefix. (expected letters, digits and hyphens, found {prefix!r})")
    if durations is not None:
        durations = tuple(float(d) for d in durations)
        if len(durations) != 2 or not MAX_DURATION <= durations[0] <= durations[1]:
            raise ValueError(f"Invalid durations. (expected min,max seconds with {MAX_DURATION:g} <= min <= max, "
                             f"found {durations})")
    favour = tuple(sorted(set(favour)))
    chances = event_chances(max_events, favour)
    if sample_rate < 16000:
        raise ValueError(f"sample_rate must be >= 16000 Hz (bird calls reach 5 kHz), got {sample_rate}")
    t0 = time.time()
    out = Path(out)
    heldout = choose_heldout(seed)
    roles = assign_splits(n_clips, seed, shares)
    settings = {"generator": "corpus.synth", "format_version": FORMAT_VERSION, "seed": seed, "n_clips": n_clips,
                "sample_rate": sample_rate, "heldout_combinations": heldout,
                "splits": {s: sum(r == s for r, _ in roles) for s in SPLITS}}
    if prefix != DEFAULT_PREFIX:  # recorded only when set, so corpora written before it keep their settings
        settings["prefix"] = prefix
    if durations is not None:
        settings["durations"] = list(durations)
    if chances is not None:
        settings.update(max_events=max_events, favour=list(favour))
    _check_settings(out, settings)
    jobs = [(seed, i, split, forced, heldout, sample_rate, str(out), prefix, durations, chances)
            for i, (split, forced) in enumerate(roles)]
    bar = dict(total=n_clips, desc="synth clips", unit="clip", disable=not progress)
    if workers <= 1:
        rows = [make_clip(j) for j in tqdm(jobs, **bar)]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            rows = list(tqdm(pool.imap(make_clip, jobs, chunksize=8), **bar))

    vocab: set[str] = set()
    for split in SPLITS:
        mine = [r for r in rows if r["split"] == split]
        write_csv(out / f"clotho_captions_{split}.csv", ["file_name"] + [f"caption_{k}" for k in range(1, 6)],
                  [[r["file_name"]] + r["captions"] for r in mine])
        meta = {r["file_name"]: _rounded({**r["scene"], "combinations": combinations(r["scene"])}) for r in mine}
        write_text_atomic(out / f"synth_metadata_{split}.json", json.dumps(meta, indent=1) + "\n")
        for r in mine:
            for c in r["captions"]:
                vocab.update(words(c))
    comp = [[r["file_name"], ";".join(r["unseen"])] for r in rows if r["split"] == "evaluation" and r["unseen"]]
    write_csv(out / "synth_compositional_evaluation.csv", ["file_name", "unseen_combinations"], comp)
    return {"clips": settings["splits"], "compositional": len(comp),
            "duration_s": round(sum(r["scene"]["duration"] for r in rows), 1), "vocabulary": len(vocab),
            "seconds": round(time.time() - t0, 1)}
