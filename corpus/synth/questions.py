"""Questions about a scene of the synthetic corpus whose answers its ground truth makes certain (audio QA).

Each clip gets 4-6 questions (2-3 for the few scenes that allow no more), each ``{"question", "answer", "type"}``,
with a short answer from a closed set per type, so that exact match after normalisation scores it (:mod:`eval.qa`):

    type               example                                      answers
    presence           "Is there a dog barking?"                    yes, no (as many about absent types as present)
    count              "How many times does the bell ring?"         one, two, three, several (5-7 repetitions)
    order              "What do you hear after the siren?"          a sound's name: beeping, bird, knocking, bell,
                                                                    whistle, dog, horn, siren, engine, buzzing,
                                                                    rain, wind, footsteps, voices
    pitch              "Is the whistle high or low pitched?"        high, low
    loudness           "Is the knocking loud or quiet?"             loud, quiet
    number_of_sources  "How many different sounds are there?"      one, two, three (the background is no source)
    background         "Is there noticeable background noise?"      yes, no (asked as often of quiet backgrounds)

Only what the scene makes unambiguous is asked: pitch and loudness only at their extremes (the scene keeps them
apart by margins a listener hears; captions never state "medium" or "normal" either), and order only between
sounds that overlap no other sound, since "what comes first?" has no answer when two sounds start together.
Phrasing is drawn from the rng with the words of :data:`lexicon.QUESTION_WORDS`. A clip's questions come from its
own RNG stream (``QUESTIONS`` in :mod:`corpus.synth.corpus`), so they never change the corpus' audio or captions,
and preparation (``python -m corpus.prepare synth``) writes them from the metadata file the generator wrote.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import lexicon as lx
from .corpus import PREFIX, QUESTIONS, _rng
from .events import EVENT_TYPES
from .scene import NOTICEABLE_P, episodes

LABELS = sorted(w["answer"] for w in lx.QUESTION_WORDS.values())  # every label (sound name) a clip can have
NUMBERS = {1: "one", 2: "two", 3: "three"}
COUNT_ANSWERS = {"1": "one", "2": "two", "3": "three", "several": "several"}
ANSWERS = {"presence": ["yes", "no"], "count": list(COUNT_ANSWERS.values()),
           "order": LABELS, "pitch": ["high", "low"],
           "loudness": ["loud", "quiet"], "number_of_sources": list(NUMBERS.values()), "background": ["yes", "no"]}
TYPES = tuple(ANSWERS)
# How strongly a type is preferred when a clip offers more questions than it gets: the types a scene rarely allows
# (order needs two separate sounds, pitch a pitched sound at an extreme) are taken first, so that over a corpus the
# types are asked about similarly often (see tests/corpus/test_questions.py). number_of_sources, when offered, is
# almost always taken (see candidates).
WEIGHTS = {"presence": 0.7, "count": 3.0, "order": 20.0, "pitch": 6.0, "loudness": 2.0, "number_of_sources": 30.0,
           "background": 3.0}
SOURCES_SHARE = 0.7  # share of clips asked how many sounds they hold
REPEAT = 0.3  # a second question of a type is that much less likely than the first: clips get varied questions
MIN_QUESTIONS, MAX_QUESTIONS = 4, 6

PRESENCE = ["is there {x}?", "do you hear {x}?", "can you hear {x}?"]
COUNT = ["how many times does {counted}?", "how many {units} do you hear?", "how many {units} are there?"]
FIRST = ["what happens first?", "what do you hear first?", "which sound comes first?", "what is the first sound?"]
LAST = ["what happens last?", "what do you hear last?", "which sound comes last?", "what is the last sound?"]
AFTER = ["what do you hear after {the}?", "what comes after {the}?", "which sound follows {the}?"]
BEFORE = ["what do you hear before {the}?", "what comes before {the}?", "which sound precedes {the}?"]
PITCH = ["is {the} high or low pitched?", "is {the} low or high pitched?", "is the pitch of {the} high or low?",
         "does {the} sound high or low?"]
LOUDNESS = ["is {the} loud or quiet?", "is {the} quiet or loud?", "does {the} sound loud or quiet?",
            "how loud is {the}, loud or quiet?"]
SOURCES = ["how many different sounds are there{besides}?", "how many distinct sound sources can you hear{besides}?",
           "how many kinds of sound do you hear{besides}?"]
BACKGROUND = ["is there noticeable background noise?", "can you hear noise in the background?",
              "is there a constant noise in the background?"]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _words(type_name: str, key: str, rng: np.random.Generator) -> str:
    return _pick(rng, lx.QUESTION_WORDS[type_name][key])


def _qa(question: str, answer: str, type_: str) -> dict:
    return {"question": question[0].upper() + question[1:], "answer": answer, "type": type_}


def _order(events: list[dict], rng: np.random.Generator) -> list[dict]:
    """First, last, after and before questions about sounds heard on their own, next to others heard on their own."""
    alone = [g[0] if len(g) == 1 else None for g in episodes(events)]
    if len(alone) < 2:
        return []

    def name(i: int) -> str:
        return lx.QUESTION_WORDS[events[i]["type"]]["answer"]

    def the(i: int) -> str:
        return _words(events[i]["type"], "the", rng)

    out = []
    if alone[0] is not None:
        out.append(_qa(_pick(rng, FIRST), name(alone[0]), "order"))
    if alone[-1] is not None:
        out.append(_qa(_pick(rng, LAST), name(alone[-1]), "order"))
    for a, b in zip(alone, alone[1:]):
        if a is not None and b is not None:
            out.append(_qa(_pick(rng, AFTER).format(the=the(a)), name(b), "order"))
            out.append(_qa(_pick(rng, BEFORE).format(the=the(b)), name(a), "order"))
    return out


def _presence(events: list[dict], rng: np.random.Generator) -> list[dict]:
    """As many questions about absent types as about present ones, alternating, in random order."""
    present = [ev["type"] for ev in events]
    absent = [str(t) for t in rng.permutation(sorted(set(EVENT_TYPES) - set(present)))]
    pairs = []
    for t_yes, t_no in zip(rng.permutation(present), absent):
        pair = [(str(t_yes), "yes"), (t_no, "no")]
        pairs += pair if rng.random() < 0.5 else pair[::-1]
    return [_qa(_pick(rng, PRESENCE).format(x=_words(t, "there", rng)), answer, "presence") for t, answer in pairs]


def candidates(scene: dict, rng: np.random.Generator) -> dict[str, list[dict]]:
    """Every question that may be asked about scene, by type, each list in the order its questions are taken."""
    events = scene["events"]
    out: dict[str, list[dict]] = {t: [] for t in TYPES}
    out["presence"] = _presence(events, rng)
    for ev in events:
        t = ev["type"]
        if ev["count"] is not None:
            template = _pick(rng, COUNT)
            text = template.format(counted=_words(t, "counted", rng), units=_words(t, "units", rng))
            out["count"].append(_qa(text, COUNT_ANSWERS[ev["count"]], "count"))
        if ev["pitch"] in ("low", "high"):
            out["pitch"].append(_qa(_pick(rng, PITCH).format(the=_words(t, "the", rng)), ev["pitch"], "pitch"))
        if ev["loudness"] in ("loud", "quiet"):
            text = _pick(rng, LOUDNESS).format(the=_words(t, "the", rng))
            out["loudness"].append(_qa(text, ev["loudness"], "loudness"))
    out["order"] = _order(events, rng)
    # Offered to a fixed share of clips and then almost always taken, so its answers follow the corpus' numbers of
    # sounds (taken by weight, it would go mostly to one-sound scenes, which offer little else).
    if rng.random() < SOURCES_SHARE:
        besides = ", not counting the background noise" if scene["background"]["noticeable"] else ""
        out["number_of_sources"] = [_qa(_pick(rng, SOURCES).format(besides=besides), NUMBERS[len(events)],
                                        "number_of_sources")]
    # Noticeable backgrounds are the rarer kind: ask about the others only as often, so "yes" is no better guess.
    if scene["background"]["noticeable"] or rng.random() < NOTICEABLE_P / (1.0 - NOTICEABLE_P):
        out["background"] = [_qa(_pick(rng, BACKGROUND), "yes" if scene["background"]["noticeable"] else "no",
                                 "background")]
    for pool in ("count", "pitch", "loudness", "order"):
        out[pool] = [out[pool][i] for i in rng.permutation(len(out[pool]))]
    return out


def questions(scene: dict, rng: np.random.Generator) -> list[dict]:
    """4-6 questions about scene (fewer if it offers fewer), drawn one at a time: a type with questions left is
    chosen with probability proportional to its weight, times REPEAT for each question of it already taken."""
    pools = candidates(scene, rng)
    n = int(rng.integers(MIN_QUESTIONS, MAX_QUESTIONS + 1))
    taken = dict.fromkeys(TYPES, 0)
    chosen: list[dict] = []
    while len(chosen) < n:
        types = [t for t in TYPES if taken[t] < len(pools[t])]
        if not types:
            break
        weights = np.array([WEIGHTS[t] * REPEAT ** taken[t] for t in types])
        t = types[int(rng.choice(len(types), p=weights / weights.sum()))]
        chosen.append(pools[t][taken[t]])
        taken[t] += 1
    return chosen


def clip_questions(seed: int, index: int, scene: dict) -> list[dict]:
    """The questions of clip ``index`` of the corpus made with ``seed``: the same for every run."""
    return questions(scene, _rng(seed, index, QUESTIONS))


_FILE_NAME = re.compile(rf"^{PREFIX}_(\d+)\.wav$")  # as corpus.file_name writes them


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise ValueError(f"{path}: missing; questions are written from the settings and scene metadata that "
                         f"`python -m corpus.synth` writes beside the audio (generate the corpus again with it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({err})") from None


def _read_scenes(root: str | Path, split: str) -> tuple[int, Path, dict[str, dict]]:
    """(seed, metadata path, ``{file_name: scene}``) of ``split`` of the synthetic corpus written under ``root``."""
    root = Path(root)
    settings = _read_json(root / "synth_corpus.json")
    if not isinstance(settings, dict) or not isinstance(settings.get("seed"), int):
        raise ValueError(f"{root / 'synth_corpus.json'}: no integer 'seed' (not written by corpus.synth?)")
    meta_path = root / f"synth_metadata_{split}.json"
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected an object {{file_name: scene}}")
    return settings["seed"], meta_path, meta


def scene_labels(scene: dict) -> list[str]:
    """The class labels of a scene: the names of its sound types (the answers of "order" questions), sorted."""
    return sorted({lx.QUESTION_WORDS[ev["type"]]["answer"] for ev in scene["events"]})


def split_annotations(root: str | Path, split: str) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """``({file_name: questions}, {file_name: labels})`` of every clip of ``split`` in the synthetic corpus written
    under ``root``, from ``synth_corpus.json`` (the seed) and ``synth_metadata_<split>.json`` (the scenes)."""
    seed, meta_path, meta = _read_scenes(root, split)
    questions_out, labels_out = {}, {}
    for name, scene in meta.items():
        match = _FILE_NAME.match(name)
        if match is None:
            raise ValueError(f"{meta_path}: clip {name!r} is not named <prefix>_NNNNNN.wav, so its index is unknown")
        try:
            questions_out[name] = clip_questions(seed, int(match.group(1)), scene)
            labels_out[name] = scene_labels(scene)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{meta_path}: scene of {name!r} is malformed ({type(err).__name__}: {err})") from None
    return questions_out, labels_out
