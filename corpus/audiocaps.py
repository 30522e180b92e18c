"""AudioCaps (v1, v2): caption tables ``<split>.csv`` or ``audiocaps_v2_<split>.csv`` and clips fetched by the user.

Tables have the columns ``audiocap_id,youtube_id,start_time,caption``; one row per caption. A clip's audio id is its
YouTube id; its captions are grouped in table order. The audio is not distributed, so clips are looked up under the
names common downloaders give (``.wav``, ``.flac`` or ``.ogg``, anywhere below the audio folder)::

    <yid>   Y<yid>   <yid>_<start>   <yid>_<start>_<end>   (start/end in seconds or milliseconds; optional Y prefix)

A clip with no file is *missing*: counted and reported, never fatal, since few users can fetch them all.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from common.io import read_csv
from corpus.source import ClipSource, SplitSource

SPLITS = ("train", "val", "test")
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")  # in order of preference when a clip exists in several formats
# YouTube ids are exactly 11 characters of [A-Za-z0-9_-], which makes names with '_' separators unambiguous.
_CLIP_NAME = re.compile(r"^Y?(?P<yid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+(?:\.\d+)?)(?:_(?P<end>\d+(?:\.\d+)?))?)?$")


def find_table(csv_dir: str | os.PathLike, split: str) -> Path:
    """The caption table of ``split``: ``<split>.csv`` or else ``audiocaps_v2_<split>.csv``."""
    tried = [Path(csv_dir) / f"{split}.csv", Path(csv_dir) / f"audiocaps_v2_{split}.csv"]
    for path in tried:
        if path.is_file():
            return path
    raise ValueError(f"no AudioCaps caption table for split {split!r}: tried {', '.join(map(str, tried))}")


def index_audio(audio_dir: str | os.PathLike) -> dict[str, list[tuple[float | None, str]]]:
    """Map YouTube id -> [(start seconds-or-ms as written or None, path), ...] for every clip-named file.

    Paths are sorted so that a clip present in several formats resolves the same way on every run.
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise ValueError(f"{audio_dir}: audio folder not found")
    index: dict[str, list[tuple[float | None, str]]] = defaultdict(list)
    rank = {ext: i for i, ext in enumerate(AUDIO_EXTENSIONS)}
    files = sorted((p for p in audio_dir.rglob("*") if p.suffix.lower() in rank and p.is_file()),
                   key=lambda p: (rank[p.suffix.lower()], str(p)))
    for path in files:
        match = _CLIP_NAME.match(path.stem)
        if match:
            start = match.group("start")
            index[match.group("yid")].append((float(start) if start is not None else None, str(path)))
    return dict(index)


def _locate(candidates: list[tuple[float | None, str]], start_time: float) -> str | None:
    """A file for the clip starting at ``start_time`` s: one naming that start (s or ms) first, else a bare id."""
    for start, path in candidates:
        if start is not None and (abs(start - start_time) < 1e-3 or abs(start - 1000 * start_time) < 1e-3):
            return path
    for start, path in candidates:
        if start is None:
            return path
    return None


def read_table(csv_path: Path) -> tuple[dict[str, list[str]], dict[str, float], list[str]]:
    """Captions and start time per YouTube id (first-seen order), plus notes on dropped rows.

    Raises ValueError naming the file (and line) for a wrong header or a malformed row (see :func:`read_csv`).
    """
    captions: dict[str, list[str]] = {}
    starts: dict[str, float] = {}
    dropped: list[str] = []
    table = read_csv(csv_path, COLUMNS)
    for line, row in zip(table.lines, table):
        where = f"{csv_path}, line {line}"
        yid = row["youtube_id"].strip()
        if not yid:
            raise ValueError(f"{where}: empty youtube_id")
        try:
            start = float(row["start_time"])
        except ValueError:
            raise ValueError(f"{where}: start_time {row['start_time']!r} is not a number") from None
        if yid in starts and starts[yid] != start:
            raise ValueError(f"{where}: youtube_id {yid!r} with start_time {start:g}, "
                             f"earlier rows say {starts[yid]:g}")
        starts[yid] = start
        text = row["caption"]
        if text.strip():
            captions.setdefault(yid, []).append(text)
        else:
            captions.setdefault(yid, [])
            dropped.append(f"{where}: {yid!r} caption is empty, dropped")
    return captions, starts, dropped


def read_split(csv_dir: str | os.PathLike, audio_index: dict[str, list[tuple[float | None, str]]],
               split: str) -> SplitSource:
    """Read ``split``'s table and locate its clips in ``audio_index`` (see :func:`index_audio`)."""
    csv_path = find_table(csv_dir, split)
    captions, starts, dropped = read_table(csv_path)
    source = SplitSource(split=split, clips=[], missing=[], dropped=dropped)
    for yid, caps in captions.items():
        path = _locate(audio_index.get(yid, []), starts[yid])
        if path is None:
            source.missing.append((yid, f"{starts[yid]:g}"))
        elif not caps:
            source.errors.append((os.path.abspath(path), f"no non-empty caption ({csv_path})"))
        else:
            source.clips.append(ClipSource(yid, path, caps))
    return source
