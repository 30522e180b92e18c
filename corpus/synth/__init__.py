"""The built-in synthetic corpus: synthesised sound scenes with five captions each, in Clotho's layout.

A real (if small) learning problem for every recipe: 14 sound-event types a listener would name, with
audible attributes (pitch, loudness, count, length, fades), 1-3 events per clip in temporal relations, varied
human-like captions, and an evaluation split holding combinations never seen in development.
Run ``python -m corpus.synth --help``.

Each clip also has questions whose answers its scene makes certain ("How many times does the bell ring?" ->
"three"; :mod:`corpus.synth.questions`), written as ``qa.json`` beside each split's manifest by
``python -m corpus.prepare synth``.
"""
from .captions import caption_scene
from .corpus import SPLITS, assign_splits, choose_heldout, make_corpus, plan_clip
from .events import EVENT_TYPES, EventType, get_event_type
from .questions import clip_questions, split_annotations
from .scene import combinations, render_scene, sample_scene

__all__ = ["EVENT_TYPES", "EventType", "SPLITS", "assign_splits", "caption_scene", "choose_heldout", "clip_questions",
           "combinations", "get_event_type", "make_corpus", "plan_clip", "render_scene", "sample_scene",
           "split_annotations"]
