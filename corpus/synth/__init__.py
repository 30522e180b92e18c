"""The built-in synthetic corpus: synthesised sound scenes with five captions each, in Clotho's layout.

A real (if small) learning problem for every recipe: 14 sound-event types a listener would name, with
audible attributes (pitch, loudness, count, length, fades), 1-3 events per clip in temporal relations, varied
human-like captions, and an evaluation split holding combinations never seen in development.
Run ``python -m corpus.synth --help``.
"""
from .captions import caption_scene
from .corpus import SPLITS, assign_splits, choose_heldout, make_corpus, plan_clip
from .events import EVENT_TYPES, EventType, get_event_type
from .scene import combinations, render_scene, sample_scene

__all__ = ["EVENT_TYPES", "EventType", "SPLITS", "assign_splits", "caption_scene", "choose_heldout",
           "combinations", "get_event_type", "make_corpus", "plan_clip", "render_scene", "sample_scene"]
