"""Label-only corpora as distributed: ESC-50, UrbanSound8K, FSD50K, and any "label CSV" (``file_name,labels``).

Each reader returns the corpus' splits (:class:`~corpus.source.SplitSource`) with labels and no captions; preparation
writes them as manifests with ``labels.json`` (captions come later, from the labels: ``corpus.keywords``). Labels
are written as words: underscores become spaces ("chirping_birds" -> "chirping birds", FSD50K's "Electric_guitar"
-> "Electric guitar"), so that a prompt ("This is a sound of {label}.") reads as text.

    ESC-50        <root>/meta/esc50.csv (filename,fold,...,category) + <root>/audio/  -> splits fold1..fold5
    UrbanSound8K  <root>/metadata/UrbanSound8K.csv (slice_file_name,fold,...,class) + <root>/audio/fold<k>/
                  -> splits fold1..fold10
    FSD50K        <root>/FSD50K.ground_truth/{dev,eval}.csv (fname,labels[,mids,split]) + <root>/FSD50K.dev_audio/,
                  <root>/FSD50K.eval_audio/  -> splits train, val (dev.csv's split column), eval
    label CSV     file_name,labels with ;-separated labels, audio in one folder -> one named split

A row without a label, with an empty label, or with a fold (or split) the corpus does not have stops preparation
with the file and line named, before any audio is read; a listed file absent on disk is reported as a bad file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from common.io import read_csv
from corpus.source import ClipSource, SplitSource

ESC50_FOLDS = 5
URBANSOUND8K_FOLDS = 10
FSD50K_SPLITS = ("train", "val", "eval")


def label_words(label: str) -> str:
    """A corpus label as words: underscores to spaces, single spaces."""
    return " ".join(label.replace("_", " ").split())


def _labels(cells: Iterable[str], where: str) -> list[str]:
    """Distinct labels as words, in order; a ValueError naming ``where`` for none or an empty one."""
    labels = [label_words(c) for c in cells]
    if not labels or any(not label for label in labels):
        raise ValueError(f"{where}: an empty label (expected one or more non-empty labels)")
    return list(dict.fromkeys(labels))


def _fold(value: str, folds: int, where: str) -> str:
    try:
        fold = int(value)
    except ValueError:
        fold = -1
    if not 1 <= fold <= folds:
        raise ValueError(f"{where}: unknown fold {value!r} (expected 1 to {folds})")
    return f"fold{fold}"


def _add(splits: dict[str, SplitSource], split: str, audio_id: str, path: Path, labels: list[str], where: str,
         seen: dict[str, str]) -> None:
    if not audio_id.strip():
        raise ValueError(f"{where}: empty file name")
    if audio_id in seen:
        raise ValueError(f"{where}: {audio_id!r} is listed twice (first at {seen[audio_id]})")
    seen[audio_id] = where
    splits[split].clips.append(ClipSource(audio_id, str(path), [], labels))


def _check_folder(folder: Path, table: Path) -> None:
    if not folder.is_dir():
        raise ValueError(f"{folder}: audio folder not found (listed by {table})")


def _read_folds(table_path: Path, name_column: str, label_column: str, n_folds: int,
                audio_path: Callable[[str, str], Path]) -> list[SplitSource]:
    """A one-label-per-clip table with a ``fold`` column -> one split per fold (``fold1``...);
    ``audio_path(fold_split, file_name)`` locates a clip."""
    table = read_csv(table_path, (name_column, "fold", label_column))
    splits = {f"fold{k}": SplitSource(f"fold{k}", []) for k in range(1, n_folds + 1)}
    seen: dict[str, str] = {}
    for line, row in zip(table.lines, table):
        where = f"{table_path}, line {line}"
        split = _fold(row["fold"], n_folds, where)
        _add(splits, split, row[name_column], audio_path(split, row[name_column]), _labels([row[label_column]], where),
             where, seen)
    return list(splits.values())


def read_esc50(root: str | os.PathLike) -> list[SplitSource]:
    """ESC-50's five folds; the label is the ``category`` column."""
    root = Path(root)
    _check_folder(root / "audio", root / "meta" / "esc50.csv")
    return _read_folds(root / "meta" / "esc50.csv", "filename", "category", ESC50_FOLDS,
                       lambda fold, name: root / "audio" / name)


def read_urbansound8k(root: str | os.PathLike) -> list[SplitSource]:
    """UrbanSound8K's ten folds; the label is the ``class`` column, the audio in ``audio/fold<k>/``."""
    root = Path(root)
    _check_folder(root / "audio", root / "metadata" / "UrbanSound8K.csv")
    return _read_folds(root / "metadata" / "UrbanSound8K.csv", "slice_file_name", "class", URBANSOUND8K_FOLDS,
                       lambda fold, name: root / "audio" / fold / name)


def read_fsd50k(root: str | os.PathLike) -> list[SplitSource]:
    """FSD50K's train and val (``dev.csv``, by its ``split`` column) and eval (``eval.csv``); labels are the
    comma-separated ``labels`` column; audio ids are ``<fname>.wav``."""
    root = Path(root)
    truth = root / "FSD50K.ground_truth"
    splits = {name: SplitSource(name, []) for name in FSD50K_SPLITS}
    seen: dict[str, str] = {}
    for table_name, folder, has_split in (("dev.csv", "FSD50K.dev_audio", True),
                                          ("eval.csv", "FSD50K.eval_audio", False)):
        table_path = truth / table_name
        table = read_csv(table_path, ("fname", "labels") + (("split",) if has_split else ()))
        _check_folder(root / folder, table_path)
        for line, row in zip(table.lines, table):
            where = f"{table_path}, line {line}"
            split = row["split"].strip() if has_split else "eval"
            if split not in ("train", "val") and has_split:
                raise ValueError(f"{where}: unknown split {row['split']!r} (expected train or val)")
            name = f"{row['fname'].strip()}.wav"
            _add(splits, split, name, root / folder / name, _labels(row["labels"].split(","), where), where, seen)
    return list(splits.values())


def read_label_csv(audio_dir: str | os.PathLike, labels_csv: str | os.PathLike, split: str) -> SplitSource:
    """A generic label table: ``file_name,labels`` (labels ``;``-separated), audio in ``audio_dir``."""
    table_path, audio_dir = Path(labels_csv), Path(audio_dir)
    table = read_csv(table_path, ("file_name", "labels"))
    _check_folder(audio_dir, table_path)
    splits = {split: SplitSource(split, [])}
    seen: dict[str, str] = {}
    for line, row in zip(table.lines, table):
        where = f"{table_path}, line {line}"
        _add(splits, split, row["file_name"], audio_dir / row["file_name"], _labels(row["labels"].split(";"), where),
             where, seen)
    return splits[split]
