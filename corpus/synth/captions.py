"""Caption grammar: five varied, human-like sentences per scene that state only what the scene makes audible.

Each caption first decides which attributes of each event it states (annotators mention different things), then
realises every event as a clause ("a bird chirps twice"), a noun phrase ("two loud beeps") or a gerund phrase
("an engine humming"), and joins them with the scene's temporal relations in one of several sentence patterns.
"""
from __future__ import annotations

import re

import numpy as np

from . import lexicon as lx

# chance that a caption states an attribute the scene has
STATE_P = {"pitch": 0.6, "loudness": 0.55, "count": 0.8, "length": 0.5, "fade": 0.75, "spans": 0.3}


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _what_to_say(ev: dict, rng: np.random.Generator) -> dict:
    """The attributes of ev this caption states, e.g. {'count': '2', 'pitch': 'high'}."""
    facts = {"pitch": ev["pitch"] if ev["pitch"] in ("low", "high") else None,
             "loudness": ev["loudness"] if ev["loudness"] in ("loud", "quiet") else None,
             "count": ev["count"], "length": ev["length"] if ev["length"] in ("short", "long") else None,
             "fade": ev["fade"], "spans": ev["spans_clip"] or None}
    return {k: v for k, v in facts.items() if v and rng.random() < STATE_P[k]}


def _subject(ev: dict, say: dict, rng: np.random.Generator) -> tuple[str, list[str], list[str]]:
    """(subject phrase, its (finite, gerund) verb, adverbials still to say) for one event."""
    subjects, verbs, takes_adj = _pick(rng, lx.LEXICON[ev["type"]]["groups"])
    head, verb = _pick(rng, subjects), _pick(rng, verbs)
    adjs, advs = [], []
    for key, adj_words, adv_words in (("loudness", lx.LOUD_ADJ, lx.LOUD_ADV), ("pitch", lx.PITCH_ADJ, lx.PITCH_ADV)):
        if key in say:
            if takes_adj and rng.random() < 0.7:
                adjs.append(_pick(rng, adj_words[say[key]]))
            else:
                advs.append(_pick(rng, adv_words[say[key]]))
    if "length" in say:
        if takes_adj and not head.startswith("~") and rng.random() < 0.3:
            adjs.append(_pick(rng, lx.LENGTH_ADJ[say["length"]]))
        else:
            advs.append(_pick(rng, lx.LENGTH_ADV[say["length"]]))
    if "count" in say:
        advs.insert(int(rng.integers(len(advs) + 1)), _pick(rng, lx.COUNT_ADV[say["count"]]))
    if "spans" in say and "length" not in say:
        advs.append(_pick(rng, lx.SPANS_ADV))
    if takes_adj:
        np_ = " ".join(adjs + [head.lstrip("~")])
        if head.startswith("~"):  # mass noun: bare or definite ("rain falls", "the wind blows")
            subject = ("the " + np_) if rng.random() < 0.4 else np_
        else:
            subject = _article(np_)
    else:
        subject = head
    return subject, list(verb), advs


def _fade_vp(ev: dict, say: dict, rng: np.random.Generator) -> str:
    if "fade" not in say:
        return ""
    options = lx.FADE_VP[say["fade"]] + (lx.MOVE_VP[say["fade"]] if lx.LEXICON[ev["type"]].get("moves") else [])
    vp = _pick(rng, options)
    return vp if vp.startswith(",") else " " + vp


def clause(ev: dict, say: dict, rng: np.random.Generator) -> str:
    """A finite clause: 'a high pitched alarm beeps twice', 'rain falls steadily and fades away'."""
    subject, (finite, _), advs = _subject(ev, say, rng)
    return " ".join([subject, finite] + advs) + _fade_vp(ev, say, rng)


def gerund(ev: dict, say: dict, rng: np.random.Generator) -> str:
    """A gerund phrase: 'an engine humming loudly', 'someone knocking on a door three times'."""
    subject, (_, ing), advs = _subject(ev, say, rng)
    return " ".join([subject, ing] + advs)


def noun_phrase(ev: dict, say: dict, rng: np.random.Generator) -> tuple[str, bool]:
    """(noun phrase, is plural): 'two loud beeps', 'a long siren wail that fades away', 'quiet rain'."""
    sg, pl = _pick(rng, lx.LEXICON[ev["type"]]["nouns"])
    adjs = []
    if "loudness" in say:
        adjs.append(_pick(rng, lx.LOUD_ADJ[say["loudness"]]))
    if "pitch" in say:
        adjs.append(_pick(rng, lx.PITCH_ADJ[say["pitch"]]))
    if "length" in say:
        adjs.insert(0, _pick(rng, lx.LENGTH_ADJ[say["length"]]))
    n_units = ev["n_units"] or 1
    if sg.startswith("~"):  # mass or plural-only noun: no article, no count
        phrase, plural = " ".join(adjs + [sg[1:]]), sg.endswith("s") and not sg.endswith("ss")
    elif "count" in say:
        det = _pick(rng, lx.COUNT_DET[say["count"]])
        plural = n_units > 1
        phrase = " ".join([det] + adjs + [pl if plural else sg])
    elif n_units > 1:
        phrase, plural = " ".join(adjs + [pl]), True
    else:
        phrase, plural = _article(" ".join(adjs + [sg])), False
    if "fade" in say:
        phrase += " " + _pick(rng, lx.FADE_NP[say["fade"]])
    return phrase, plural


def _single(ev: dict, say: dict, rng: np.random.Generator) -> str:
    form = int(rng.integers(6))
    if form < 3:
        return clause(ev, say, rng)
    np_, plural = noun_phrase(ev, say, rng)
    if form == 3:
        return f"{np_} can be heard"
    if form == 4:
        return f"there {'are' if plural else 'is'} {np_}"
    return _pick(rng, ["you can hear ", "we hear ", "the sound of "]) + np_


def _pair(a: dict, sa: dict, b: dict, sb: dict, rel: str, rng: np.random.Generator) -> str:
    """Two events joined by their relation: 'then' (b after a) or 'while' (overlapping)."""
    if rel == "then":
        form = int(rng.integers(7))
        if form == 0:
            return f"{clause(a, sa, rng)}, then {clause(b, sb, rng)}"
        if form == 1:
            return f"{clause(a, sa, rng)} before {clause(b, sb, rng)}"
        if form == 2:
            return f"{clause(b, sb, rng)} after {clause(a, sa, rng)}"
        if form == 3:
            return f"first {clause(a, sa, rng)}, and then {clause(b, sb, rng)}"
        if form == 4:
            np_a, plural = noun_phrase(a, sa, rng)
            return f"{np_a} {'are' if plural else 'is'} followed by {noun_phrase(b, sb, rng)[0]}"
        if form == 5:
            return f"{clause(a, sa, rng)}, followed by {noun_phrase(b, sb, rng)[0]}"
        return f"{clause(a, sa, rng)} and afterwards {clause(b, sb, rng)}"
    if rng.random() < 0.5:  # overlap is symmetric: either may lead the sentence
        a, sa, b, sb = b, sb, a, sa
    form = int(rng.integers(6))
    if form == 4 and b["loudness"] == "loud":  # a loud sound is not "in the background"
        form = 0
    if form == 0:
        return f"{clause(a, sa, rng)} while {clause(b, sb, rng)}"
    if form == 1:
        return f"while {clause(a, sa, rng)}, {clause(b, sb, rng)}"
    if form == 2:
        return f"{clause(a, sa, rng)} as {clause(b, sb, rng)}"
    if form == 3:
        return f"{noun_phrase(a, sa, rng)[0]} and {noun_phrase(b, sb, rng)[0]} can be heard at the same time"
    if form == 4:
        return f"{clause(a, sa, rng)} with {gerund(b, sb, rng)} in the background"
    return f"{clause(a, sa, rng)}, accompanied by {noun_phrase(b, sb, rng)[0]}"


def _then_tail(ev: dict, say: dict, rel: str, rng: np.random.Generator) -> str:
    """The third event appended to a two-event sentence."""
    if rel == "then":
        form = int(rng.integers(3))
        if form == 0:
            return f", and then {clause(ev, say, rng)}"
        if form == 1:
            return f", followed by {noun_phrase(ev, say, rng)[0]}"
        return f" before {clause(ev, say, rng)}"
    form = int(rng.integers(3))
    if form == 2 and ev["loudness"] == "loud":  # a loud sound is not "in the background"
        form = 0
    if form == 0:
        return f" while {clause(ev, say, rng)}"
    if form == 1:
        return f", as {clause(ev, say, rng)}"
    return f", with {gerund(ev, say, rng)} in the background"


def _background(scene: dict, text: str, rng: np.random.Generator) -> str:
    bg = scene["background"]
    if bg["noticeable"] and rng.random() < 0.4:
        noise = _pick(rng, lx.BACKGROUND_NP[bg["colour"]])
        forms = [f" over {noise}", f" against {noise}", f", with {noise} throughout"]
        if "background" not in text + noise:
            forms.append(f" with {noise} in the background")
        return _pick(rng, forms)
    if not bg["noticeable"] and rng.random() < 0.15:
        return _pick(rng, lx.QUIET_PLACE)
    return ""


def caption(scene: dict, rng: np.random.Generator) -> str:
    """One caption of a scene, capitalised and ending with a full stop."""
    evs, rels = scene["events"], scene["relations"]
    says = [_what_to_say(ev, rng) for ev in evs]
    if len(evs) == 1:
        text = _single(evs[0], says[0], rng)
    else:
        text = _pair(evs[0], says[0], evs[1], says[1], rels[0], rng)
        if len(evs) == 3:
            text += _then_tail(evs[2], says[2], rels[1], rng)
    text += _background(scene, text, rng)
    text = re.sub(r"\s+", " ", text).strip()
    return text[0].upper() + text[1:] + "."


def caption_scene(scene: dict, rng: np.random.Generator, n: int = 5) -> list[str]:
    """n captions of a scene, distinct where the grammar allows (redrawn up to 20 times each)."""
    out: list[str] = []
    for _ in range(n):
        for _ in range(20):
            c = caption(scene, rng)
            if c not in out:
                break
        out.append(c)
    return out


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a caption, for vocabulary counts."""
    return re.findall(r"[a-z']+", text.lower())
