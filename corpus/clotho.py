"""Clotho (v1, v2.1) as distributed: ``clotho_audio_<split>/`` folders and ``clotho_captions_<split>.csv`` tables.

A caption table has the header ``file_name,caption_1,...,caption_K`` (K = 5 in every release); ``file_name`` is the
clip's file name inside the audio folder and becomes its audio id unchanged (names hold spaces and commas).
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

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
    source = SplitSource(split=split, clips=[])
    first_row: dict[str, int] = {}
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{csv_path}: empty file (expected a header file_name,caption_1,...)")
            _check_header(csv_path, header)
            for row in reader:
                line = reader.line_num  # physical line where the row ends (quoted captions may span lines)
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                where = f"{csv_path}, line {line}"
                if len(row) != len(header):
                    raise ValueError(f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
                name = row[0]
                if not name.strip():
                    raise ValueError(f"{where}: empty file_name")
                if name in first_row:
                    raise ValueError(f"{where}: duplicate file_name {name!r} (first on line {first_row[name]})")
                first_row[name] = line
                captions = []
                for column, text in zip(header[1:], row[1:]):
                    if text.strip():
                        captions.append(text)
                    else:
                        source.dropped.append(f"{where}: {name!r} {column} is empty, dropped")
                path = str(audio_dir / name)
                if captions:
                    source.clips.append(ClipSource(name, path, captions))
                else:
                    source.errors.append((os.path.abspath(path), f"no non-empty caption ({where})"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{csv_path}: not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise ValueError(f"{csv_path}: malformed CSV ({err})") from None
    return source
