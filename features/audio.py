"""Reading audio files: validation, down-mixing to mono and resampling.

Every failure raises :class:`AudioError`, whose message names the file and the reason, so a preparation or
extraction stage can report a bad clip and carry on with the others.

Short sounds are audio too (a click or a drum hit of a real sound library lasts 40-100 ms): :func:`load_audio`
zero-pads a clip shorter than :data:`MIN_SECONDS` at its end to that length, so every audio encoder gets at least
that much; only a file without a single sample is refused.

Formats: whatever libsndfile reads (wav in 8/16/24/32-bit integer or float, flac, ogg/vorbis, ...), at any sample
rate and channel count. A header need not state the length (a FLAC stream may leave it 0): such a file, or one whose
stated length its size could not hold, is read through in blocks to find its real length, and ``max_duration`` stops
the reading as soon as it is passed; nothing is allocated on a header's word.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# Shortest audio handed to an encoder (s): shorter clips are zero-padded at their end to this length. It is the
# shortest clip extraction used to accept, so no clip of that length or more changes; it spans every registered
# encoder's analysis window (PANNs 1024 samples at 32 kHz, 512 at 16 kHz: 32 ms; AST 400 at 16 kHz: 25 ms), and each
# encoder pads further to its own floor if it has one (PANNs CNNs: one output frame, 0.32 s).
MIN_SECONDS = 0.1
# Peak level (dBFS, full scale = 0 dB) at or below which a clip counts as silent: digital silence, or 16-bit dither
# of a few steps (one step is -90 dBFS), too faint to describe.
SILENCE_DBFS = -80.0
SILENCE_PEAK = 10.0 ** (SILENCE_DBFS / 20.0)  # the same as a linear peak: 1e-4
# Samples read per block while scanning a file, so probing a long file never holds it all in memory.
_SCAN_BLOCK = 1 << 16
# libsndfile notes a WAV whose data chunk claims more bytes than the file holds as "data : N (should be M)".
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# libsndfile's length for a stream whose header states none (a FLAC with total samples 0 in STREAMINFO, which the
# format allows for streams): SF_COUNT_MAX. Reading "all" of it would allocate that many frames.
_UNKNOWN_FRAMES = 2 ** 63 - 1
# A stated length above this many frames per byte of file is not believed: no codec libsndfile reads packs more (a
# FLAC frame holds at most 65535 samples and takes several bytes; Vorbis and MP3 packets hold a few thousand).
_MAX_FRAMES_PER_BYTE = 1 << 16


class AudioError(ValueError):
    """An audio file that cannot be used; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learned about one file.

    ``peak`` is the largest absolute sample value (full scale = 1.0) when the samples were scanned, else ``None``.
    """

    path: str
    duration: float  # seconds
    sample_rate: int
    channels: int
    num_frames: int
    subtype: str  # e.g. "PCM_16", "PCM_24", "FLOAT", "VORBIS"
    format: str  # e.g. "WAV", "FLAC", "OGG"
    peak: float | None = None

    @property
    def silent(self) -> bool:
        """True when the scanned peak is at or below :data:`SILENCE_PEAK` (silence is valid, just worth a note)."""
        return self.peak is not None and self.peak <= SILENCE_PEAK


def _check_file(path: Path) -> None:
    """Fail early, with a precise reason, on paths libsndfile would only call 'unrecognised'."""
    if not path.exists():
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _open_error(path: Path, err: Exception) -> AudioError:
    # libsndfile's own reason, without soundfile's "Error opening '<path>': " prefix.
    reason = getattr(err, "error_string", None) or str(err)
    return AudioError(path, f"not a readable audio file ({reason.strip()})")


def _unreadable(path: Path, err: Exception) -> AudioError:
    """Any other failure on one file (MemoryError, an error inside soundfile or soxr, ...) as an AudioError naming
    it, so that a run over many files reports this one and carries on."""
    return AudioError(path, f"cannot be read ({type(err).__name__}: {str(err).strip() or 'no details'})")


def _header(path: Path) -> tuple[sf._SoundFileInfo, int | None]:
    """The header, validated, and the length it states in frames (``None`` when it states none or an impossible
    one: the file must then be read through to learn it)."""
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _open_error(path, err) from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header (sample rate {info.samplerate}, channels {info.channels})")
    if info.frames <= 0:
        raise AudioError(path, "no samples (header only)")
    short = _SHORT_DATA.search(info.extra_info or "")
    if short:
        raise AudioError(path, f"truncated: header declares {short.group(1)} data bytes, file holds {short.group(2)}")
    believable = info.frames < _UNKNOWN_FRAMES and info.frames <= _MAX_FRAMES_PER_BYTE * path.stat().st_size
    return info, int(info.frames) if believable else None


def _blocks(path: Path, stated: int | None) -> Iterator[np.ndarray]:
    """The file's samples as float32 blocks (n, C) of at most :data:`_SCAN_BLOCK` frames, until its real end."""
    if stated is not None:
        yield from sf.blocks(str(path), blocksize=_SCAN_BLOCK, dtype="float32", always_2d=True)
        return
    # Without a length, soundfile's own reads fail at the end: after each read it seeks to where it stopped, and
    # libsndfile cannot seek to the end of a stream whose length it does not know ("psf_fseek() failed"). So the
    # blocks are read through libsndfile's read call itself (soundfile's binding of it; soundfile is pinned in
    # requirements.txt), which just returns fewer frames at the end.
    with sf.SoundFile(str(path)) as f:
        buf = np.empty((_SCAN_BLOCK, f.channels), np.float32)  # (n, C)
        while True:
            n = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", buf.ctypes.data), _SCAN_BLOCK)
            if sf._snd.sf_error(f._file):
                raise sf.LibsndfileError(sf._snd.sf_error(f._file))
            if n <= 0:
                return
            yield buf[:n].copy()


def probe(path: str | os.PathLike, *, scan: bool = True) -> AudioInfo:
    """Read a file's header and (with ``scan``) all its samples, and validate it.

    A file whose header states no length (or one its size could not hold) is scanned whatever ``scan`` says: its
    duration is what it really holds. Raises :class:`AudioError` for a missing or empty file, one that is not audio or
    has a corrupt or truncated header or data, one with no samples, one that fails to read for any other reason, and
    (when scanned) one holding NaN or infinite samples. Silent audio is valid; ``AudioInfo.silent`` flags it.
    """
    path = Path(path)
    try:
        return _probe(path, scan)
    except AudioError:
        raise
    except Exception as err:  # noqa: BLE001 - one bad file must not stop a run over many
        raise _unreadable(path, err) from err


def _probe(path: Path, scan: bool) -> AudioInfo:
    info, stated = _header(path)
    peak, frames = None, stated
    if scan or stated is None:
        peak, frames = 0.0, 0
        try:
            for block in _blocks(path, stated):
                if not np.isfinite(block).all():
                    raise AudioError(path, "non-finite samples (NaN or inf)")
                if block.size:
                    peak = max(peak, float(np.abs(block).max()))
                frames += len(block)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(path, f"corrupt data ({err})") from None
        if frames == 0:
            raise AudioError(path, "no samples could be read")
        if stated is not None and frames < stated:
            raise AudioError(path, f"truncated: header declares {stated} frames, only {frames} readable")
    return AudioInfo(
        path=str(path),
        duration=frames / info.samplerate,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        num_frames=frames,
        subtype=str(info.subtype),
        format=str(info.format),
        peak=peak,
    )


def is_silent(waveform: np.ndarray) -> bool:
    """True when a waveform's peak is at or below :data:`SILENCE_PEAK` (:data:`SILENCE_DBFS`), e.g. all zeros."""
    return waveform.size == 0 or float(np.abs(waveform).max()) <= SILENCE_PEAK


def min_samples(sample_rate: int) -> int:
    """Length, in samples at ``sample_rate``, that :func:`load_audio` pads shorter clips to (:data:`MIN_SECONDS`)."""
    return round(MIN_SECONDS * sample_rate)


def _pair(value: float, limit: float) -> tuple[str, str]:
    """``value`` and ``limit`` with the fewest significant digits (at least 3) that tell them apart."""
    for digits in range(3, 13):
        a, b = f"{value:.{digits}g}", f"{limit:.{digits}g}"
        if a != b:
            return a, b
    return repr(value), repr(limit)


def check_duration(path: str | os.PathLike, duration: float, min_duration: float,
                   max_duration: float | None) -> None:
    """Raise :class:`AudioError` when ``duration`` (s) lies outside ``[min_duration, max_duration]``; the message
    prints enough digits to show the difference (``too short: 0.09998 s < min_duration 0.1 s``)."""
    if duration < min_duration:
        found, limit = _pair(duration, min_duration)
        raise AudioError(path, f"too short: {found} s < min_duration {limit} s")
    if max_duration is not None and duration > max_duration:
        found, limit = _pair(duration, max_duration)
        raise AudioError(path, f"too long: {found} s > max_duration {limit} s")


def load_audio(path: str | os.PathLike, sample_rate: int, *, max_duration: float | None = None,
               pad_to: float = MIN_SECONDS) -> np.ndarray:
    """Load a file as float32 mono at ``sample_rate`` Hz, zero-padded at its end to at least ``pad_to`` seconds.

    Channels are mixed to mono by averaging. Resampling, when the file's rate differs, uses soxr at its highest
    quality setting ('VHQ': a linear-phase filter with a very steep cut-off and ~175 dB stop-band), so frequencies and
    levels below the new Nyquist are kept. A clip shorter than ``pad_to`` (default :data:`MIN_SECONDS`, 0.1 s; 0 for
    none) is resampled as it is, then zeros are appended; longer clips are returned unchanged. ``max_duration`` is
    checked on the file as stored.

    Returns:
        waveform [N] float32 with ``N = max(round(num_frames * sample_rate / file_rate), round(pad_to * sample_rate))``.
    Raises:
        AudioError: missing, empty, unreadable or corrupt file; no samples; NaN/inf samples; longer than
            ``max_duration`` seconds; any other failure to read it (e.g. out of memory), its reason named.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"Invalid sample_rate. (expected a positive integer, found {sample_rate!r})")
    path = Path(path)
    try:
        return _load(path, int(sample_rate), max_duration, pad_to)
    except AudioError:
        raise
    except Exception as err:  # noqa: BLE001 - one bad file must not stop a run over many
        raise _unreadable(path, err) from err


def _load(path: Path, sample_rate: int, max_duration: float | None, pad_to: float) -> np.ndarray:
    info, stated = _header(path)
    file_rate = int(info.samplerate)
    try:
        if stated is not None:
            check_duration(path, stated / file_rate, 0.0, max_duration)
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
            mono = data.mean(axis=1, dtype=np.float64)  # (N,) averaged in float64: many channels lose no precision
        else:
            mono = _read_through(path, file_rate, max_duration)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"corrupt data ({err})") from None
    return prepare_waveform(mono, file_rate, sample_rate, path, pad_to)


def prepare_waveform(mono: np.ndarray, rate: int, sample_rate: int, name: str | os.PathLike,
                     pad_to: float = MIN_SECONDS) -> np.ndarray:
    """Mono samples at ``rate`` Hz -> float32 at ``sample_rate`` Hz, zero-padded at the end to ``pad_to`` seconds, as
    :func:`load_audio` returns a file's; AudioError naming ``name`` for no samples or non-finite ones."""
    if mono.shape[0] == 0:
        raise AudioError(name, "no samples could be read")
    if not np.isfinite(mono).all():
        raise AudioError(name, "non-finite samples (NaN or inf)")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, int(sample_rate), quality="VHQ")
    wave = np.ascontiguousarray(mono, dtype=np.float32)
    target = round(max(pad_to, 0.0) * sample_rate)
    if len(wave) < target:
        wave = np.pad(wave, (0, target - len(wave)))  # (target,) the clip, then zeros
    return wave


def _read_through(path: Path, file_rate: int, max_duration: float | None) -> np.ndarray:
    """A file of unknown length as mono float64, block by block, refused as soon as it passes ``max_duration``."""
    parts, frames = [], 0
    for block in _blocks(path, None):
        frames += len(block)
        if max_duration is not None and frames / file_rate > max_duration:
            found, limit = _pair(frames / file_rate, max_duration)
            raise AudioError(path, f"too long: over {found} s > max_duration {limit} s (its header states no usable "
                                   "length; reading stopped there)")
        parts.append(block.mean(axis=1, dtype=np.float64))  # (n,) as the whole-file read averages it
    return np.concatenate(parts) if parts else np.zeros(0)
