"""What the server accepts: upload size, audio format, length, channels and sample rate, query length; and the
checks that enforce them where input enters, each failing with an :class:`ApiError` (status + reason)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile

from features.audio import AudioError, probe

READ_BLOCK = 1 << 16  # bytes copied at a time from an upload into its temporary file


class ApiError(Exception):
    """A request the server refuses: the HTTP ``status``, a ``reason`` for a person, optional response headers."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


@dataclass(frozen=True)
class Limits:
    """The server's limits (each a command-line option of ``python -m serve``)."""

    max_upload_mb: float = 20.0
    max_seconds: float = 120.0
    formats: tuple[str, ...] = ("WAV", "FLAC", "OGG")  # as libsndfile names them
    max_channels: int = 2
    min_sample_rate: int = 8000
    max_sample_rate: int = 48000
    max_waiting: int = 4
    timeout: float = 60.0
    max_query_chars: int = 500
    max_labels: int = 50
    max_top: int = 50
    max_beam: int = 10
    read_timeout: float = 30.0  # s to send a request's headers, and at most between two pieces of its body
    max_connections: int = 100  # open at once; a browser keeps about 6

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def check_name(name: str | None) -> None:
    """Refuse a client file name that tries to be a path (it is never used as one, but such a name is an attack
    or a broken client, and saying so is clearer than ignoring it)."""
    if name and ("/" in name or "\\" in name or "\0" in name or name.startswith("..")):
        raise ApiError(400, f"invalid file name {name!r}: a file name, not a path, is expected")


async def save_upload(upload: UploadFile, folder: Path, limits: Limits) -> Path:
    """Copy ``upload`` into ``folder`` under a fixed name (never the client's), refusing an empty or oversized one
    while it is copied."""
    check_name(upload.filename)
    path, size = folder / "upload", 0
    with open(path, "wb") as out:
        while block := await upload.read(READ_BLOCK):
            size += len(block)
            if size > limits.max_upload_bytes:
                raise ApiError(413, f"upload larger than {limits.max_upload_mb:g} MB")
            out.write(block)
    if size == 0:
        raise ApiError(400, "empty upload (0 bytes): choose or record a sound first")
    return path


def check_audio(path: Path, limits: Limits) -> dict:
    """The header of an uploaded file, checked against the limits; returns what it says about the audio."""
    try:
        info = probe(path, scan=False)
    except AudioError as err:  # its reason only: the path is the server's, not the client's business
        raise ApiError(415, f"not a readable audio file: {err.reason}") from None
    if info.format not in limits.formats:
        raise ApiError(415, f"audio format {info.format} not accepted (accepted: {', '.join(limits.formats)})")
    problems = []
    if info.duration > limits.max_seconds:
        problems.append(f"{info.duration:.1f} s long (at most {limits.max_seconds:g} s)")
    if info.channels > limits.max_channels:
        problems.append(f"{info.channels} channels (at most {limits.max_channels})")
    if not limits.min_sample_rate <= info.sample_rate <= limits.max_sample_rate:
        problems.append(f"sampled at {info.sample_rate} Hz (accepted: {limits.min_sample_rate}-"
                        f"{limits.max_sample_rate} Hz)")
    if problems:
        raise ApiError(422, "audio refused: " + "; ".join(problems))
    return {"duration": round(info.duration, 3), "sample_rate": info.sample_rate, "channels": info.channels,
            "format": info.format}


def check_query(text: str, limits: Limits, what: str = "query") -> str:
    """A query or label: non-empty text, valid Unicode, at most ``max_query_chars`` characters."""
    if not text.strip():
        raise ApiError(400, f"empty {what}: type a few words")
    if len(text) > limits.max_query_chars:
        raise ApiError(413, f"{what} too long: {len(text)} characters (at most {limits.max_query_chars})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{what} is not valid Unicode text") from None
    return text.strip()


def check_int(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise ApiError(422, f"{what} must be between {low} and {high} (got {value})")
    return value
