"""Atomic writes, and the small CSV tables the project reads and writes.

One rule for every output, so that a reader (or a rerun after a kill or a full disk) sees the old output or the
whole new one: the data goes to ``.<name>.tmp<pid>`` in the same folder (a file, or a folder of files), is flushed to
disk (``fsync``) and moved onto ``<name>`` in one step (:func:`atomic_output`; :func:`atomic_write` as an open file).
Before writing, temporaries a dead process left are removed and the bytes the output needs, where known, are checked
against the free space; a failure on the way (no space left, a kill signal turned into an exception) removes the
temporary and leaves any previous ``<name>`` untouched, and a full disk is reported naming its device.

CSV tables (manifests, caption tables, predictions) are UTF-8 with a header row and RFC 4180 quoting:
:func:`write_csv` writes one atomically, :func:`read_csv` reads one whose header must hold given columns.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import glob
import io
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Iterator


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name this process writes ``path`` under (hidden, same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, need: int = 0) -> Iterator[Path]:
    """The one rule for every output, for writers that take a name (h5py, the ONNX exporter, a folder of files):
    yields the temporary path to write (a file, or a folder the block makes) that replaces ``path`` when the block
    ends without an error; otherwise the temporary is removed and any previous ``path`` is left as it was.

    Before the block: the folder is created, temporaries a dead process left for ``path`` are removed, and ``need``
    (bytes the output will take, 0 if unknown) is checked against the free space. A full disk, found then or on the
    way, is an ``OSError`` (ENOSPC) naming the device, whatever words the writer used for it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, glob.escape(path.name))
    check_free_space(path.parent, need, path.name)
    tmp = temp_path(path)
    try:
        yield tmp
        put_in_place(tmp, path)
    except BaseException as err:
        raise output_failed(err, tmp, path) from err


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", need: int = 0) -> Iterator[IO]:
    """:func:`atomic_output` as an open file (``mode`` "w": UTF-8 text, "wb": bytes)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"Invalid mode. (expected 'w' or 'wb', found {mode!r})")
    with atomic_output(path, need) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f


def check_free_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """Refuse to start writing ``what`` (``need`` bytes) into ``folder`` when its device has less free space (plus
    5% and 64 KiB to spare, for the file system's own blocks), before any work is spent on it."""
    if need <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < need * 1.05 + _SPARE:
        raise OSError(errno.ENOSPC, f"No space left on {device_of(folder)}: {what} needs about "
                                    f"{_size(need)}, {_size(free)} free", str(folder))


def put_in_place(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` (a file, or a folder's files) to disk and move it onto ``path`` in one step. A folder is
    swapped with an existing ``path`` atomically (``renameat2`` with ``RENAME_EXCHANGE``), then the old one removed."""
    for file in ([tmp] if tmp.is_file() else sorted(p for p in tmp.rglob("*") if p.is_file())):
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    if tmp.is_dir() and path.is_dir():
        _exchange(tmp, path)
        shutil.rmtree(tmp)  # now the old folder
    else:
        os.replace(tmp, path)


def output_failed(err: BaseException, tmp: Path, path: Path) -> BaseException:
    """Remove the temporary ``tmp`` of ``path`` after ``err``, and return the error to raise: ``err`` itself, or
    an ENOSPC ``OSError`` naming the device when the disk is full (torch and h5py say it in words of their own:
    "file write failed", "Disable slist on flush dest failure")."""
    _remove(tmp)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename:
        return err  # it names its folder already
    if isinstance(err, Exception) and _disk_full(err, path.parent):
        return OSError(errno.ENOSPC, f"No space left on {device_of(path.parent)} while writing {path.name}",
                       str(path.parent))
    return err


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


_SPARE = 64 << 10


def _size(n: float) -> str:
    """Bytes for a message: ``"12 KB"``, ``"3.4 MB"``, ``"1.2 GB"``."""
    if n < 1 << 20:
        return f"{n / 1024:.0f} KB"
    return f"{n / 2**20:.1f} MB" if n < 1 << 30 else f"{n / 2**30:.1f} GB"


def _disk_full(err: Exception, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < _SPARE
    except OSError:
        return False


def device_of(path: str | os.PathLike) -> str:
    """The device holding ``path``, for messages: ``"/dev/sda1 (mounted at /data)"``, from the mount table."""
    mount = Path(os.path.abspath(path))
    while not mount.exists() and mount != mount.parent:
        mount = mount.parent
    while mount != mount.parent and os.stat(mount.parent).st_dev == os.stat(mount).st_dev:
        mount = mount.parent
    source = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and _unescape(fields[1]) == str(mount):
                source = _unescape(fields[0])  # the last mount at a point is the visible one
    return f"{source} (mounted at {mount})" if source else f"the device mounted at {mount}"


def _unescape(field: str) -> str:
    """A mount table field: spaces, tabs and backslashes are written as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux ``renameat2``); where the call or the file system lacks it, two renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    rename_exchange, at_cwd = 2, -100
    swap = getattr(libc, "renameat2", None)
    if swap is not None and swap(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return
    if swap is not None and ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


class PickledDataError(ValueError):
    """A file holding pickled Python data where plain data was expected: never loaded."""


def read_arrays(path: str | os.PathLike, keys: Sequence[str], remedy: str) -> list:
    """The arrays ``keys`` of the ``.npz`` file ``path``; :class:`PickledDataError` naming the file and the array
    when one is an object array (numpy's own refusal names neither), ending with ``remedy``."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        arrays = []
        for key in keys:
            try:
                arrays.append(z[key])
            except ValueError as err:
                if "allow_pickle" not in str(err):  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                    raise
                raise PickledDataError(f"{path}: refused: its '{key}' is an object array (pickled Python data), "
                                       f"which is never loaded; {remedy}") from None
        return arrays


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
            _remove(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A small CSV table as text: ``header``, then ``rows`` (RFC 4180 quoting, ``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a small CSV table atomically (UTF-8; see :func:`csv_text`)."""
    write_text_atomic(path, csv_text(header, rows))


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
