"""The manifest: the one format every corpus is prepared into, and every later stage reads.

One folder per split::

    <out>/<split>/wav.csv        audio_id,path,duration,sample_rate,channels   (path absolute; RFC 4180 quoting)
    <out>/<split>/captions.json  {"<audio_id>": ["caption", ...], ...}         (UTF-8, original text, stable order)
    <out>/<split>/errors.csv     path,reason                                    (bad files; written even if empty)
    <out>/<split>/labels.json    {"<audio_id>": ["label", ...], ...}           (optional: class labels, e.g. of a
                                                                                 label-only corpus or the synth events)
    <out>/<split>/split.json     {"files": {"<name>": "<SHA-256>", ...}}        (what was written together)

A split is written as one unit (a temporary folder swapped in), and read only if its files are the ones
``split.json`` records, so a split can never mix one preparation's clips with another's captions.

Rules that :func:`read_manifest` enforces: audio ids are unique and non-empty; every id in ``captions.json`` is in
``wav.csv``; captions and labels are non-empty strings, a clip's labels distinct. A clip with no captions is
allowed (an unlabelled split, e.g. audio to caption at inference) and listed by :attr:`Manifest.uncaptioned`;
preparation of a captioned corpus never writes one.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.io import atomic_output, csv_text, read_csv

WAV_CSV = "wav.csv"
CAPTIONS_JSON = "captions.json"
LABELS_JSON = "labels.json"
ERRORS_CSV = "errors.csv"
SPLIT_JSON = "split.json"
WAV_COLUMNS = ("audio_id", "path", "duration", "sample_rate", "channels")
ERROR_COLUMNS = ("path", "reason")


@dataclass(frozen=True)
class AudioEntry:
    """One clip of a split; ``duration`` in seconds, ``path`` absolute."""

    audio_id: str
    path: str
    duration: float
    sample_rate: int
    channels: int


@dataclass
class Manifest:
    """A prepared split: its clips in a stable order, their captions, and the files that were refused."""

    split: str
    audio: list[AudioEntry]
    captions: dict[str, list[str]]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labels: dict[str, list[str]] = field(default_factory=dict)  # audio_id -> class labels (labelled splits only)

    @property
    def ids(self) -> list[str]:
        """Audio ids in manifest order."""
        return [entry.audio_id for entry in self.audio]

    @property
    def uncaptioned(self) -> list[str]:
        """Ids of clips without any caption."""
        return [i for i in self.ids if not self.captions.get(i)]

    def entry(self, audio_id: str) -> AudioEntry:
        """The clip with ``audio_id``; KeyError otherwise."""
        for entry in self.audio:
            if entry.audio_id == audio_id:
                return entry
        raise KeyError(f"audio_id {audio_id!r} not in split {self.split!r}")

    def pairs(self) -> list[tuple[str, str]]:
        """Every (audio_id, caption), clips in manifest order, captions in their stored order."""
        return [(i, c) for i in self.ids for c in self.captions.get(i, [])]

    def __len__(self) -> int:
        return len(self.audio)


def read_captions(path: str | os.PathLike, what: str = "caption") -> dict[str, list[str]]:
    """``{audio_id: [caption, ...]}`` from a ``captions.json`` file (or ``labels.json``, ``what="label"``), its
    shape checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: missing (expected {{audio_id: [{what}, ...]}})")
    try:
        captions = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({err})") from None
    if not isinstance(captions, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in captions.values()):
        raise ValueError(f"{path}: expected a mapping {{audio_id: [{what}, ...]}}")
    return captions


def write_manifest(manifest: Manifest, out_dir: str | os.PathLike, extras: Mapping[str, str] | None = None) -> Path:
    """Write ``manifest`` into ``<out_dir>/<manifest.split>/`` as one unit and return that folder.

    The split's files (and ``extras``: file name -> text, e.g. ``qa.json``) are written into a temporary folder
    beside it, with ``split.json`` recording each file's SHA-256, and swapped in whole: a kill or a full disk leaves
    the previous split as it was, never new clips beside old captions.
    """
    _validate(manifest, where=str(out_dir))
    split_dir = Path(out_dir) / manifest.split
    rows = [(e.audio_id, os.path.abspath(e.path), f"{e.duration:.6f}", e.sample_rate, e.channels)
            for e in manifest.audio]
    files = {WAV_CSV: csv_text(WAV_COLUMNS, rows),
             CAPTIONS_JSON: _json({i: list(manifest.captions[i]) for i in manifest.ids if i in manifest.captions}),
             ERRORS_CSV: csv_text(ERROR_COLUMNS, list(manifest.errors))}
    if manifest.labels:
        files[LABELS_JSON] = _json({i: list(manifest.labels[i]) for i in manifest.ids if i in manifest.labels})
    files.update(extras or {})
    data = {name: text.encode("utf-8") for name, text in sorted(files.items())}
    data[SPLIT_JSON] = _json({"files": {name: hashlib.sha256(b).hexdigest() for name, b in data.items()}}).encode()
    with atomic_output(split_dir, need=sum(map(len, data.values()))) as tmp:
        tmp.mkdir()
        for name, content in data.items():
            (tmp / name).write_bytes(content)
    return split_dir


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1) + "\n"


def _check_record(split_dir: Path) -> None:
    """The split's files are the ones ``split.json`` records (a split without one was made by hand: taken as is)."""
    path = split_dir / SPLIT_JSON
    if not path.exists():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))["files"]
        names = [n for n in record if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a split record ({err}); delete it to take the files as they are") from None
    for name in names:
        file = split_dir / name
        found = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
        if found != record[name]:
            raise ValueError(f"{file}: {'missing' if found is None else 'differs from what ' + SPLIT_JSON + ' records'}"
                             " (written by another preparation, or edited): the split's files disagree; prepare it "
                             f"again, or delete {path} to take the files as they are")


def _validate(manifest: Manifest, where: str) -> None:
    seen: set[str] = set()
    for entry in manifest.audio:
        if not entry.audio_id:
            raise ValueError(f"{where}: empty audio_id for {entry.path!r}")
        if entry.audio_id in seen:
            raise ValueError(f"{where}: duplicate audio_id {entry.audio_id!r}")
        seen.add(entry.audio_id)
    for what, table in (("captions", manifest.captions), ("labels", manifest.labels)):
        unknown = [i for i in table if i not in seen]
        if unknown:
            raise ValueError(f"{where}: {what} for {len(unknown)} audio ids not in {WAV_CSV}, e.g. {unknown[:3]}")
        for audio_id, items in table.items():
            if not isinstance(items, list) or not all(isinstance(c, str) and c.strip() for c in items):
                raise ValueError(f"{where}: {what} of {audio_id!r} must be a list of non-empty strings, found "
                                 f"{items!r}")
    for audio_id, labels in manifest.labels.items():
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"{where}: labels of {audio_id!r} must be distinct and at least one, found {labels!r}")


def read_manifest(split_dir: str | os.PathLike) -> Manifest:
    """Read and validate the split in ``split_dir``; its folder name is the split name.

    ``errors.csv`` is optional on reading (a hand-made manifest may lack it). Raises ValueError naming the file for
    a missing file, missing columns, a malformed value, duplicate ids, or captions for unknown ids.
    """
    split_dir = Path(split_dir)
    _check_record(split_dir)
    wav_path = split_dir / WAV_CSV
    audio = []
    table = read_csv(wav_path, WAV_COLUMNS)
    for line, row in zip(table.lines, table):
        try:
            audio.append(AudioEntry(row["audio_id"], row["path"], float(row["duration"]),
                                    int(row["sample_rate"]), int(row["channels"])))
        except ValueError as err:
            raise ValueError(f"{wav_path}, line {line}: bad value ({err})") from None
    captions = read_captions(split_dir / CAPTIONS_JSON)
    errors_path = split_dir / ERRORS_CSV
    errors = ([(r["path"], r["reason"]) for r in read_csv(errors_path, ERROR_COLUMNS)]
              if errors_path.exists() else [])
    labels_path = split_dir / LABELS_JSON
    labels = read_captions(labels_path, "label") if labels_path.exists() else {}
    manifest = Manifest(split_dir.name, audio, captions, errors, labels)
    _validate(manifest, where=str(split_dir))
    return manifest


def read_manifests(paths: str, where: str = "data") -> Manifest:
    """One manifest from comma-separated split folders (``a,b``: e.g. a caption corpus and a label-only corpus with
    generated captions): clips in order, captions and labels together; an audio id in two of them is refused."""
    folders = [p.strip() for p in paths.split(",") if p.strip()]
    if not folders:
        raise ValueError(f"{where}: no split folder given")
    splits = [read_manifest(folder) for folder in folders]
    if len(splits) == 1:
        return splits[0]
    owner: dict[str, str] = {}
    for folder, split in zip(folders, splits):
        for audio_id in split.ids:
            if audio_id in owner:
                raise ValueError(f"{where}: audio id {audio_id!r} is in both {owner[audio_id]} and {folder}; "
                                 f"splits trained together need distinct ids")
            owner[audio_id] = folder
    return Manifest("+".join(s.split for s in splits), [e for s in splits for e in s.audio],
                    {k: v for s in splits for k, v in s.captions.items()},
                    [e for s in splits for e in s.errors], {k: v for s in splits for k, v in s.labels.items()})


def check_audio_files(manifest: Manifest, where: str | os.PathLike, listed: int = 20) -> None:
    """Check, from headers only (fast), that every clip of ``manifest`` is still readable audio; a ValueError names
    every bad one. Training calls this before it starts: audio that went bad after preparation would otherwise stop
    a run in the middle of an epoch."""
    from features.audio import AudioError, probe

    bad = []
    for entry in manifest.audio:
        try:
            probe(entry.path, scan=False)
        except AudioError as err:
            bad.append(f"{entry.path} ({err.reason})")
    if bad:
        more = f", and {len(bad) - listed} more" if len(bad) > listed else ""
        raise ValueError(f"{where}: {len(bad)} of {len(manifest)} clips are no longer readable audio (prepare the "
                         f"split again or restore them): " + "; ".join(bad[:listed]) + more)
