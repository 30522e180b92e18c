"""Clotho (v1, v2.1) as distributed: ``clotho_audio_<split>/`` folders and ``clotho_captions_<split>.csv`` tables.

A caption table has the header ``file_name,caption_1,...,caption_K`` (K = 5 in every release); ``file_name`` is the
clip's file name inside the audio folder and becomes its audio id unchanged (names hold spaces and commas).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from common.io import read_csv
from corpus.source import ClipSource, SplitSource

SPLITS = ("development", "validation", "evaluation")
_CAPTION_COLUMN = re.compile(r"^caption_(\d+)$")


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(audio folder, caption table) of ``split`` in a Clotho root as distributed."""
    root = Path(root)
    return root / f"clotho_audio_{split}", root / f"clotho_captions_{split}.csv"


def _check_header(csv_path: Path, header: list[str]) -> None:
    numbers = [_CAPTION_COLUMN.match(h) for h in header[1:]]
    ok = (len(header) >= 2 and header[0] == "file_name" and all(numbers)
          and [int(m.group(1)) for m in numbers] == list(range(1, len(header))))
    if not ok:
        raise ValueError(f"{csv_path}, row 1: wrong header (expected file_name,caption_1,...,caption_5; "
                         f"found {','.join(header)})")


def read_split(audio_dir: str | os.PathLike, captions_csv: str | os.PathLike, split: str) -> SplitSource:
    """Read a caption table and point each row at ``audio_dir/<file_name>``.

    Empty caption cells are dropped and noted; a clip left with no caption is refused (``errors``). Existence of
    the audio is not checked here: probing reports a missing file like any other bad one.

    Raises:
        ValueError naming the file (and row): missing table or audio folder, undecodable text, wrong header, a row with the wrong
            number of fields, an empty or duplicate ``file_name``.
    """
    csv_path = Path(captions_csv)
    audio_dir = Path(audio_dir)
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: caption table not found")
    if not audio_dir.is_dir():
        raise ValueError(f"{audio_dir}: audio folder not found (caption table {csv_path})")
    table = read_csv(csv_path)
    if not table.header:
        raise ValueError(f"{csv_path}: empty file (expected a header file_name,caption_1,...)")
    _check_header(csv_path, table.header)
    source = SplitSource(split=split, clips=[])
    first_line: dict[str, int] = {}
    for line, row in zip(table.lines, table):
        where = f"{csv_path}, line {line}"
        name = row["file_name"]
        if not name.strip():
            raise ValueError(f"{where}: empty file_name")
        if name in first_line:
            raise ValueError(f"{where}: duplicate file_name {name!r} (first on line {first_line[name]})")
        first_line[name] = line
        captions = []
        for column in table.header[1:]:
            if row[column].strip():
                captions.append(row[column])
            else:
                source.dropped.append(f"{where}: {name!r} {column} is empty, dropped")
        path = str(audio_dir / name)
        if captions:
            source.clips.append(ClipSource(name, path, captions))
        else:
            source.errors.append((os.path.abspath(path), f"no non-empty caption ({where})"))
    return source


def resplit(sources: list[SplitSource], share: float, seed: int) -> list[SplitSource]:
    """Merge the clips of the first two ``sources`` (development and validation) and deal them again, ``share`` of
    them to the first split and the rest to the second, by a permutation seeded with ``seed`` of the clips sorted by
    audio id (the same corpus and seed always give the same split). Clips refused while reading, and dropped
    captions, stay noted in the first split. Any further sources (evaluation) pass unchanged.

    The SJTU report trains on Clotho development + validation re-split 9:1 (``share`` 0.9).
    """
    import numpy as np

    if len(sources) < 2:
        raise ValueError("a re-split needs two splits to merge (development and validation)")
    if not 0 < share < 1:
        raise ValueError(f"Invalid re-split share. (expected a fraction in (0, 1), found {share!r})")
    first, second, *rest = sources
    pool = sorted(first.clips + second.clips, key=lambda c: c.audio_id)
    ids = [c.audio_id for c in pool]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"cannot merge {first.split} and {second.split}: {len(twice)} file name(s) in both, "
                         f"e.g. {twice[:3]}")
    order = np.random.default_rng(seed).permutation(len(pool))
    cut = round(share * len(pool))
    if not 0 < cut < len(pool):
        raise ValueError(f"re-split {share} of {len(pool)} clips leaves a split empty")
    merged = SplitSource(first.split, [pool[i] for i in sorted(order[:cut])], first.errors + second.errors,
                         dropped=first.dropped + second.dropped)
    return [merged, SplitSource(second.split, [pool[i] for i in sorted(order[cut:])]), *rest]
