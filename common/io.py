"""Atomic writes, and the small CSV tables the project reads and writes.

Atomic: a reader (or a rerun after a kill or a full disk) sees the old file or the whole new one. Every file the
project writes goes through :func:`atomic_write`: the data goes to ``.<name>.tmp<pid>`` in the same folder, is
flushed to disk (``fsync``) and renamed onto ``<name>``. A failure on the way (no space left, a kill signal turned
into an exception) removes the temporary file and leaves any previous ``<name>`` untouched.

CSV tables (manifests, caption tables, predictions) are UTF-8 with a header row and RFC 4180 quoting:
:func:`write_csv` writes one atomically, :func:`read_csv` reads one whose header must hold given columns.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Iterator


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name this process writes ``path`` under (hidden, same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` "w": UTF-8 text, "wb": bytes) that replaces ``path`` when the
    block ends without an error. The folder is created if missing."""
    if mode not in ("w", "wb"):
        raise ValueError(f"Invalid mode. (expected 'w' or 'wb', found {mode!r})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        full = isinstance(err, Exception) and _disk_full(err, path.parent)
        tmp.unlink(missing_ok=True)
        if full:  # torch and h5py report a full disk in words of their own ("file write failed", ...)
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path.name}",
                          str(path.parent)) from err
        raise


def _disk_full(err: Exception, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def remove_stale_temps(folder: str | os.PathLike, name: str) -> None:
    """Delete temporary files of ``name`` left in ``folder`` by processes that no longer run (a live process may
    still be writing its own). ``name`` may be a glob pattern: ``"*"`` cleans up after every file of ``folder``."""
    for tmp in Path(folder).glob(f".{name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a small CSV table atomically: ``header``, then ``rows`` (UTF-8, RFC 4180 quoting, ``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


class CsvTable(list):
    """The data rows of a CSV table, each a dict keyed by the header, with ``header`` (the column names in file
    order) and ``lines`` (the line of the file each row ends on: a quoted cell may span lines), for messages."""

    def __init__(self, header: list[str], rows: list[dict[str, str]], lines: list[int]) -> None:
        super().__init__(rows)
        self.header, self.lines = header, lines


def read_csv(path: str | os.PathLike, required_columns: Sequence[str] = ()) -> CsvTable:
    """Read a CSV table (UTF-8, a leading byte-order mark allowed) whose header holds ``required_columns``.

    Rows whose cells are all blank are skipped. Raises ValueError naming the file: missing, not UTF-8, malformed
    CSV, a header lacking required columns (naming them and the header found), a row with another number of fields
    than the header (naming its line).
    """
    path = Path(path)
    expected = ",".join(required_columns)
    if not path.is_file():
        raise ValueError(f"{path}: missing (expected a CSV table{' with columns ' + expected if expected else ''})")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            missing = [c for c in required_columns if c not in header]
            if missing:
                raise ValueError(f"{path}: missing columns {missing} in the header (expected {expected}, found "
                                 f"{','.join(header) if header else 'nothing: the file is empty'})")
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise ValueError(f"{path}, line {reader.line_num}: {len(row)} fields, expected {len(header)} "
                                     f"({','.join(header)})")
                rows.append(dict(zip(header, row)))
                lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise ValueError(f"{path}: malformed CSV ({err})") from None
    return CsvTable(header, rows, lines)
