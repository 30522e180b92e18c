"""What a corpus reader hands to preparation: the clips of one split and what it already found wrong."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClipSource:
    """One clip as the corpus lists it: where its audio should be, its captions (in the corpus' order) and, for a
    labelled corpus, its class labels."""

    audio_id: str
    path: str
    captions: list[str]
    labels: list[str] = field(default_factory=list)


@dataclass
class SplitSource:
    """The clips of one split, and problems found while reading the caption table.

    ``errors``: (path, reason) of clips refused before any audio was read (e.g. no non-empty caption).
    ``missing``: (audio_id, detail) of clips absent on disk where that is expected and not an error (AudioCaps).
    ``dropped``: human-readable notes on dropped captions (e.g. an empty cell), naming file and row.
    """

    split: str
    clips: list[ClipSource]
    errors: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] | None = None
    dropped: list[str] = field(default_factory=list)
