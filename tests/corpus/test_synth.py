"""The synthetic corpus: determinism, Clotho layout, audible attributes, held-out combinations, its questions."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from corpus.prepare import prepare_synth
from corpus.synth import (EVENT_TYPES, SPLITS, assign_splits, choose_heldout, clip_questions, combinations,
                          make_corpus, plan_clip, render_scene, sample_scene)
from corpus.synth.captions import words
from corpus.synth.questions import TYPES as QUESTION_TYPES
from corpus.synth.scene import event_chances, render_event, sample_event
from corpus.synth.signals import active_level_db
from eval.qa import read_qa
from features.manifest import read_manifest

N_SMALL = 30
SR = 16000


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path)) as w:
        return (np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate(), w.getnchannels(),
                w.getsampwidth())


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def corpus_w1(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_w1")
    make_corpus(out, N_SMALL, seed=3, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def corpus_w2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_w2")
    make_corpus(out, N_SMALL, seed=3, workers=2, progress=False)
    return out


def test_same_seed_is_byte_identical_for_any_worker_count(corpus_w1, corpus_w2):
    a, b = _tree(corpus_w1), _tree(corpus_w2)
    assert len([k for k in a if k.endswith(".wav")]) == N_SMALL
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_different_seed_differs(corpus_w1, tmp_path):
    make_corpus(tmp_path, N_SMALL, seed=4, workers=1, progress=False)
    a, b = _tree(corpus_w1), _tree(tmp_path)
    assert a["clotho_captions_development.csv"] != b["clotho_captions_development.csv"]
    common_wavs = [k for k in a.keys() & b.keys() if k.endswith(".wav")]
    assert all(a[k] != b[k] for k in common_wavs)


def test_prefix_renames_the_clips_only(corpus_w1, tmp_path):
    make_corpus(tmp_path, N_SMALL, seed=3, workers=1, progress=False, prefix="other-set")
    a, b = _tree(corpus_w1), _tree(tmp_path)
    renamed = {k.replace("synth_", "other-set_"): v for k, v in a.items() if k.endswith(".wav")}
    assert renamed == {k: v for k, v in b.items() if k.endswith(".wav")}  # the same audio, other names
    assert json.loads((tmp_path / "synth_corpus.json").read_text())["prefix"] == "other-set"
    with pytest.raises(ValueError, match="Invalid prefix"):
        make_corpus(tmp_path / "x", 1, prefix="a/b")


def test_rerun_completes_an_interrupted_corpus_and_refuses_other_settings(corpus_w1, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(corpus_w1, out)
    victim = next((out / "clotho_audio_development").glob("*.wav"))
    victim.unlink()
    (out / "clotho_captions_evaluation.csv").unlink()
    make_corpus(out, N_SMALL, seed=3, workers=1, progress=False)
    assert _tree(out) == _tree(corpus_w1)
    with pytest.raises(ValueError, match="other settings"):
        make_corpus(out, N_SMALL, seed=5, workers=1, progress=False)


def test_clotho_layout_captions_and_wav_format(corpus_w1):
    counts = {}
    for split in SPLITS:
        rows = _rows(corpus_w1 / f"clotho_captions_{split}.csv")
        counts[split] = len(rows)
        with open(corpus_w1 / f"clotho_captions_{split}.csv", encoding="utf-8") as f:
            assert f.readline().strip() == "file_name,caption_1,caption_2,caption_3,caption_4,caption_5"
        meta = json.loads((corpus_w1 / f"synth_metadata_{split}.json").read_text())
        assert sorted(meta) == sorted(r["file_name"] for r in rows)
        for r in rows:
            caps = [r[f"caption_{k}"] for k in range(1, 6)]
            assert all(c.strip() and c[0].isupper() and c.endswith(".") for c in caps), caps
            assert len(set(caps)) >= 3, caps  # varied phrasing, not one sentence five times
            x, sr, channels, width = _read_wav(corpus_w1 / f"clotho_audio_{split}" / r["file_name"])
            assert (sr, channels, width) == (SR, 1, 2)
            assert 3.0 <= x.size / sr <= 20.0
            assert abs(x.size / sr - meta[r["file_name"]]["duration"]) < 1e-3
            assert np.abs(x.astype(np.int32)).max() < 32767  # never clipped
            assert np.abs(x).max() > 300  # and not silent
            for ev in meta[r["file_name"]]["events"]:
                assert 0.0 <= ev["onset"] < ev["offset"] <= meta[r["file_name"]]["duration"] + 1e-6
    assert counts == {"development": 21, "validation": 4, "evaluation": 5}
    first = next((corpus_w1 / "clotho_audio_development").glob("*.wav"))
    y, sr = soundfile.read(first, dtype="int16")  # the reader the preparation path uses agrees
    assert sr == SR and np.array_equal(y, _read_wav(first)[0])


def test_compositional_list_holds_only_combinations_unseen_in_development(corpus_w1):
    meta = {s: json.loads((corpus_w1 / f"synth_metadata_{s}.json").read_text()) for s in SPLITS}
    seen = {c for m in meta["development"].values() for c in m["combinations"]}
    listed = _rows(corpus_w1 / "synth_compositional_evaluation.csv")
    assert listed, "expected at least one compositional evaluation clip"
    for row in listed:
        assert row["file_name"] in meta["evaluation"]
        unseen = row["unseen_combinations"].split(";")
        assert set(unseen) <= set(meta["evaluation"][row["file_name"]]["combinations"])
        assert not set(unseen) & seen


def test_prepared_corpus_has_questions_for_every_clip(corpus_w1, tmp_path):
    """Questions come from the metadata the generator writes (rounded, with combinations) and cover every clip."""
    prepare_synth(tmp_path, root=corpus_w1, workers=1)
    for split in SPLITS:
        meta = json.loads((corpus_w1 / f"synth_metadata_{split}.json").read_text())
        qa = read_qa(tmp_path / split)
        assert list(qa) == read_manifest(tmp_path / split).ids and sorted(qa) == sorted(meta)
        for name, qs in qa.items():
            assert qs == clip_questions(3, int(name[6:12]), meta[name])
            assert 2 <= len(qs) <= 6 and {q["type"] for q in qs} <= set(QUESTION_TYPES)
            assert all(q["answer"] == ["one", "two", "three"][len(meta[name]["events"]) - 1]
                       for q in qs if q["type"] == "number_of_sources")


def test_heldout_rule_over_a_planned_corpus():
    """Over 300 planned clips: development and validation never hold a held-out combination, forced ones do."""
    seed, n = 11, 300
    heldout = set(choose_heldout(seed))
    assert len(heldout) == 12
    per_split: dict[str, set[str]] = {s: set() for s in SPLITS}
    for i, (split, forced) in enumerate(assign_splits(n, seed)):
        scene, _ = plan_clip(seed, i, forced, sorted(heldout))
        combos = set(combinations(scene))
        assert bool(combos & heldout) == forced, (i, split, combos & heldout)
        per_split[split] |= combos
    assert not (per_split["development"] | per_split["validation"]) & heldout
    assert per_split["evaluation"] & heldout


def test_split_shares():
    count = lambda roles: {s: sum(r == s for r, _ in roles) for s in SPLITS}  # noqa: E731
    assert count(assign_splits(100, 0)) == {"development": 70, "validation": 15, "evaluation": 15}
    roles = assign_splits(800, 0, (0.525, 0.1, 0.375))
    assert count(roles) == {"development": 420, "validation": 80, "evaluation": 300}
    assert sum(forced for _, forced in roles) == 120  # 40% of evaluation holds a held-out combination
    for bad in [(0.5, 0.5), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1), "0.7"]:
        with pytest.raises(ValueError, match="Invalid shares"):
            assign_splits(10, 0, bad)


def test_event_types_and_vocabulary_over_300_clips():
    seed, n = 0, 300
    heldout = choose_heldout(seed)
    types, vocab, durations = set(), set(), []
    for i, (split, forced) in enumerate(assign_splits(n, seed)):
        scene, caps = plan_clip(seed, i, forced, heldout)
        assert len(caps) == 5
        types |= {ev["type"] for ev in scene["events"]}
        durations.append(scene["duration"])
        assert 1 <= len(scene["events"]) <= 3
        for c in caps:
            vocab |= set(words(c))
    assert len(EVENT_TYPES) >= 12 and types == set(EVENT_TYPES)
    assert len(vocab) >= 200, len(vocab)
    assert 3.0 <= min(durations) and max(durations) <= 20.0 and np.std(durations) > 2.0


def _onsets(x: np.ndarray, sr: int) -> int:
    """Number of audible attacks: 10 ms frames rising > 6 dB within 50 ms, within 20 dB of the peak."""
    hop = sr // 100
    level = 20 * np.log10(np.sqrt(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1)) + 1e-9)
    floor = level.max() - 20
    hits = [t for t in range(5, level.size) if level[t] > floor and level[t] - level[t - 5:t].min() > 6]
    merged = [h for k, h in enumerate(hits) if k == 0 or h - hits[k - 1] > 10]  # one attack per 100 ms
    return len(merged) + int(level[:5].max() > floor)  # an attack in the very first frames


@pytest.mark.parametrize("name", sorted(n for n, e in EVENT_TYPES.items() if e.countable))
def test_counts_are_audible(name):
    rng = np.random.default_rng(7)
    for label, expected in (("1", 1), ("2", 2), ("3", 3)):
        ev = sample_event(rng, name, {"count": label, "loudness": "normal"})
        x = np.concatenate([np.zeros(SR // 10), render_event(rng, ev, SR)])
        assert _onsets(x, SR) == expected, (name, label)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_loud_and_quiet_differ_by_at_least_12_db(name):
    rng = np.random.default_rng(1)
    loud = render_event(rng, sample_event(rng, name, {"loudness": "loud", "count": "2", "length": "long"}), SR)
    quiet = render_event(rng, sample_event(rng, name, {"loudness": "quiet", "count": "2", "length": "long"}), SR)
    assert active_level_db(loud, SR) - active_level_db(quiet, SR) >= 12.0


def _dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("name", sorted(n for n, e in EVENT_TYPES.items() if e.pitched))
def test_high_and_low_pitch_are_over_an_octave_apart(name):
    rng = np.random.default_rng(2)
    fixed = {"count": "2", "length": "medium", "fade": None, "loudness": "normal"}
    low = render_event(rng, sample_event(rng, name, {**fixed, "pitch": "low"}), SR)
    high = render_event(rng, sample_event(rng, name, {**fixed, "pitch": "high"}), SR)
    assert _dominant_hz(high, SR) / _dominant_hz(low, SR) >= 2.0


def test_rendered_scenes_are_finite_and_below_full_scale():
    rng = np.random.default_rng(5)
    for _ in range(20):
        scene = sample_scene(rng)
        x = render_scene(rng, scene, SR)
        assert x.shape == (round(scene["duration"] * SR),)
        assert np.isfinite(x).all() and np.abs(x).max() <= 0.98


def test_cli_help_explains_the_arguments():
    out = subprocess.run([sys.executable, "-m", "corpus.synth", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr  # fire writes help to stderr when not on a terminal
    for word in ("n_clips", "seed", "sample_rate", "workers", "clotho_captions"):
        assert word in text


def test_long_clips_spread_the_same_events_and_keep_their_answers(tmp_path):
    """--durations: each clip lasts 30 to 90 s, its events keep their lengths, order and overlaps (so captions and
    answers stay true) and are spread over the clip; the short corpus is unchanged by the option's existence."""
    seed, heldout = 3, choose_heldout(3)
    starts = []
    for i in range(40):
        short, short_caps = plan_clip(seed, i, False, heldout)
        long, long_caps = plan_clip(seed, i, False, heldout, (30.0, 90.0))
        assert 30.0 <= long["duration"] <= 90.0
        by_onset = lambda s: sorted(s["events"], key=lambda e: e["onset"])  # noqa: E731
        for a, b in zip(by_onset(short), by_onset(long)):
            assert a["type"] == b["type"] and abs((a["offset"] - a["onset"]) - (b["offset"] - b["onset"])) < 1e-3
            assert 0.0 <= b["onset"] and b["offset"] <= long["duration"]
        gaps = lambda s: [y["onset"] - x["offset"] for x, y in zip(by_onset(s), by_onset(s)[1:])]  # noqa: E731
        assert all((g1 < 0) == (g2 < 0) and (g1 < 0 or g2 >= g1 - 1e-3) for g1, g2 in zip(gaps(short), gaps(long)))
        assert [q["answer"] for q in clip_questions(seed, i, short)] == [
            q["answer"] for q in clip_questions(seed, i, long)]
        starts.append(min(e["onset"] for e in long["events"]) / long["duration"])
    assert max(starts) > 0.5  # sounds are not all at the start of the clip
    make_corpus(tmp_path / "long", 3, seed=seed, workers=1, progress=False, durations=(30, 40))
    for path in (tmp_path / "long").glob("clotho_audio_*/*.wav"):
        assert 30.0 <= soundfile.info(path).duration <= 40.0
    assert json.loads((tmp_path / "long/synth_corpus.json").read_text())["durations"] == [30.0, 40.0]
    for bad in [(10, 40), (50, 40), (30,)]:
        with pytest.raises(ValueError, match="Invalid durations"):
            make_corpus(tmp_path / "bad", 3, seed=seed, workers=1, progress=False, durations=bad)


def test_event_mix_changes_the_corpus_character_and_nothing_by_default(tmp_path):
    """--max_events and --favour: another corpus's character (a source to pre-train on); the default draws stay."""
    seed, n = 0, 300
    heldout = choose_heldout(seed)
    favour = ("dog", "rain")
    chances = event_chances(2, favour)
    assert event_chances() is None  # the default mix: the default corpus's random draws, byte for byte
    counts, mixed = {t: 0 for t in EVENT_TYPES}, 0
    for i in range(n):
        default, _ = plan_clip(seed, i, False, heldout)
        scene, _ = plan_clip(seed, i, False, heldout, chances=chances)
        assert 1 <= len(scene["events"]) <= 2
        mixed += scene != default
        for ev in scene["events"]:
            counts[ev["type"]] += 1
    assert mixed > n * 0.9
    others = [c for t, c in counts.items() if t not in favour]
    assert min(counts[t] for t in favour) > 2 * max(others), counts
    make_corpus(tmp_path / "mix", 4, seed=1, workers=1, progress=False, max_events=1, favour=favour)
    settings = json.loads((tmp_path / "mix/synth_corpus.json").read_text())
    assert settings["max_events"] == 1 and settings["favour"] == ["dog", "rain"]
    make_corpus(tmp_path / "plain", 4, seed=1, workers=1, progress=False)
    assert "favour" not in json.loads((tmp_path / "plain/synth_corpus.json").read_text())
    for bad in [dict(max_events=0), dict(max_events=4), dict(favour=("unicorn",))]:
        with pytest.raises(ValueError, match="Invalid"):
            make_corpus(tmp_path / "bad", 4, seed=1, workers=1, progress=False, **bad)
