"""Caption raw audio files: frozen audio encoder -> frame features -> captioner(s) -> beam search.

    python -m captioning.infer clips/ "my recording.flac" --audio-encoder exp/retrieval/audio_encoder.pt \
        --captioners exp/cap_a/averaged.pt,exp/cap_b/averaged.pt [--out pred.json] [--csv submission.csv]
    python -m captioning.infer clips/ --bundle model/caption_bundle.pt
    python -m captioning.infer clips/ --bundle model/caption_bundle.pt --runtime onnx --onnx-dir model/onnx

Inputs are files (any format and length ``features.audio.load_audio`` reads, resampled to the encoder's rate) and
folders, which stand for their own audio files (``.wav``, ``.flac``, ``.ogg``; not sub-folders nor hidden files),
sorted by name. Clips are batched and encoded as feature extraction does it (``features.encode``: longest first,
padded batches with lengths, so a clip gets the same features alone or in any batch; long audio windowed every
``chunk_seconds``, chosen when the encoder is loaded). The captioners (an ensemble when several) decode each batch
with one batched beam search.

Short sounds (clicks, drum hits) are captioned like the rest: a clip shorter than ``features.audio.MIN_SECONDS``
(0.1 s) is zero-padded at its end to that length, as feature extraction pads it. Silent audio (digital silence, or a
peak at or below ``features.audio.SILENCE_DBFS``, -80 dBFS, as the encoder gets it) is captioned too, since a captioner
always says something, but flagged: a note on stderr, ``"silent": true`` in its JSON entry, its id under ``silent``
in the returned dict.

Outputs: JSON ``[{"audio_id": file name, "path", "caption"[, "silent": true]}]`` (``--out``) and/or the DCASE CSV
``file_name,caption_predicted`` (``--csv``), in input order; with neither, ``file name<TAB>caption`` lines go to
stdout. Output paths are checked before any model or audio is loaded: a folder, or a file whose folder cannot be
made or written, is refused at once. A bad file (empty, without samples, unreadable, not audio, non-finite, a header
stating an impossible length, ...) is reported on stderr with its reason and skipped; the others are captioned. Two
inputs with the same file name are refused (their ids would clash).
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import functools
import math
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

from common.cli import run
from captioning.bundle import Pipeline, check_decoding, open_pipeline
from captioning.decode import caption_frames, write_predictions
from features.audio import SILENCE_DBFS, AudioError, is_silent, load_audio, probe
from features.encode import encode_waveforms, plan_batches

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def list_audio(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given (any extension, missing ones too: they are reported when read), folders expanded to their
    audio files sorted by name; the same file named twice is kept once. ValueError when two files share a name."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            files.append(path)
    unique = list({os.path.realpath(p): p for p in reversed(files)}.values())[::-1]  # first mention wins
    by_name: dict[str, Path] = {}
    for path in unique:
        if path.name in by_name:
            raise ValueError(f"Two inputs share the file name {path.name!r} ({by_name[path.name]} and {path}); "
                             "captions are identified by file name, so caption them in separate runs")
        by_name[path.name] = path
    return unique


def check_outputs(**outputs: str | None) -> None:
    """Refuse at once an output file that could not be written when the captions are done: a folder, a path that
    names a folder, one whose folder cannot be created (a file stands in its way) or written, two outputs on one
    file. ``outputs``: option name -> path (None: not asked for)."""
    seen: dict[str, str] = {}
    for option, value in outputs.items():
        if value is None:
            continue
        path = Path(value)
        if path.is_dir() or str(value).endswith(("/", os.sep)):
            raise ValueError(f"--{option} {value}: is a folder; expected a file to write (e.g. {path / 'pred.json'})")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:  # the nearest folder that exists is the one written
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"--{option} {value}: its folder cannot be created, {folder} is a file; expected a "
                             "file in a folder that exists or can be made")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"--{option} {value}: cannot write in {folder} (permission denied); expected a file in "
                             "a folder you can write")
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"--{option} and --{seen[real]} name the same file {value}; give them different names")
        seen[real] = option


class Captioned(NamedTuple):
    """What :func:`caption_files` returns: ``{path: caption}`` for the files captioned, in the order given,
    ``{path: reason}`` for the files skipped, the captioned files whose audio is silent (both printed on stderr), and
    ``{path: score}``, each caption's mean log-probability per word (:meth:`Hypotheses.chosen`)."""

    captions: dict[str, str]
    errors: dict[str, str]
    silent: list[str]
    scores: dict[str, float]


def decoding_options(pipeline: Pipeline, batch_size: int, decoding: dict[str, Any]) -> dict[str, Any]:
    """``pipeline.decoding`` with the settings given (None: the pipeline's), checked; the pipeline set to eval."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size. (expected a positive integer, found {batch_size!r})")
    options = check_decoding({**pipeline.decoding, **{k: v for k, v in decoding.items() if v is not None}})
    if options["rerank_weight"] and pipeline.reranker is None:
        raise ValueError("rerank_weight: this pipeline has no re-ranker (give --rerank, or a bundle made with one)")
    pipeline.encoder.eval()
    for model in pipeline.scorer.models:
        model.eval()
    return options


def caption_waveforms(pipeline: Pipeline, waves: Sequence[np.ndarray], **options: Any) -> list[tuple[str, float]]:
    """One batch of waveforms at the encoder's rate -> (caption, score) each; ``options`` from
    :func:`decoding_options`."""
    with torch.inference_mode():
        out = encode_waveforms(pipeline.encoder, list(waves))
        return caption_frames(pipeline.scorer, out["frames"], out["frame_lengths"], pipeline.vocab, clips=out["clip"],
                              reranker=pipeline.reranker, **options)


def caption_in_batches(pipeline: Pipeline, waves: Sequence[np.ndarray], batch_size: int = 8,
                       **decoding: Any) -> list[tuple[str, float]]:
    """Waveforms in memory at the encoder's rate -> (caption, score) each, in input order, batched as
    :func:`caption_files` batches files; ``decoding`` as there."""
    options = decoding_options(pipeline, batch_size, decoding)
    rate = int(pipeline.encoder.sample_rate)
    out: dict[int, tuple[str, float]] = {}
    for batch in plan_batches([len(w) / rate for w in waves], batch_size):
        out.update(zip(batch, caption_waveforms(pipeline, [waves[i] for i in batch], **options)))
    return [out[i] for i in range(len(waves))]


def caption_files(pipeline: Pipeline, files: Sequence[str | os.PathLike], *, batch_size: int = 8,
                  progress: bool = False, **decoding: Any) -> Captioned:
    """Caption audio files with a pipeline; ``decoding`` overrides ``pipeline.decoding`` (beam_size, max_len, ...)."""
    options = decoding_options(pipeline, batch_size, decoding)
    rate = int(pipeline.encoder.sample_rate)
    paths = [str(f) for f in files]
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    for path in paths:  # headers only: lengths for batching, and the cheap failures early
        try:
            durations[path] = probe(path, scan=False).duration
        except AudioError as err:
            errors[path] = err.reason
    readable = [p for p in paths if p in durations]
    captioned: dict[str, tuple[str, float]] = {}
    silent: set[str] = set()
    bar = tqdm(total=len(paths), unit="clip", desc="caption", disable=not progress, file=sys.stderr)
    for path in errors:
        bar.write(f"skipping {path}: {errors[path]}", file=sys.stderr)
    bar.update(len(errors))
    for batch in plan_batches([durations[p] for p in readable], batch_size):
        names, waves = [], []
        for i in batch:
            try:
                waves.append(load_audio(readable[i], rate))  # (N,) at least MIN_SECONDS, zero-padded
                names.append(readable[i])
            except AudioError as err:
                errors[readable[i]] = err.reason
                bar.write(f"skipping {readable[i]}: {err.reason}", file=sys.stderr)
                continue
            if is_silent(waves[-1]):
                silent.add(readable[i])
                bar.write(f"note: {readable[i]}: {_silence(waves[-1])}; captioned anyway, flagged silent",
                          file=sys.stderr)
        if waves:
            captioned.update(zip(names, caption_waveforms(pipeline, waves, **options)))
        bar.update(len(batch))
    bar.close()
    done = [p for p in paths if p in captioned]
    return Captioned({p: captioned[p][0] for p in done}, {p: errors[p] for p in paths if p in errors},
                     [p for p in done if p in silent], {p: captioned[p][1] for p in done})


def _silence(wave: np.ndarray) -> str:
    """How silent a silent waveform is, for a note."""
    peak = float(np.abs(wave).max())
    if peak == 0.0:
        return "silent audio (digital silence)"
    return f"silent audio (peak {20 * math.log10(peak):.1f} dBFS <= {SILENCE_DBFS:g} dBFS)"


def infer(*inputs: str, audio_encoder: str | None = None, captioners: str | Sequence[str] | None = None,
          bundle: str | None = None, encoder: str | None = None, out: str | None = None, csv: str | None = None,
          beam_size: int | None = None, max_len: int | None = None, min_len: int | None = None,
          length_norm: float | None = None, rerank: str | None = None, rerank_weight: float | None = None,
          batch_size: int = 8, chunk_seconds: float | None = None,
          runtime: str = "torch", onnx_dir: str | None = None, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    """Caption audio files and folders with an audio encoder and captioner(s), or with one bundle.

    Clips shorter than 0.1 s (``features.audio.MIN_SECONDS``) are zero-padded at their end to 0.1 s; empty,
    unreadable or non-finite files are reported and skipped. Silent clips (peak at or below -80 dBFS,
    ``features.audio.SILENCE_DBFS``) are captioned but flagged: a note on stderr and ``"silent": true`` in ``out``.

    Args:
        inputs: audio files (any readable format) and folders (their .wav/.flac/.ogg files, sorted).
        audio_encoder: audio-encoder checkpoint (the ``audio_encoder.pt`` that ``retrieval.train`` writes beside
            ``best.pt``, not ``best.pt`` itself) or official PANNs checkpoint; it must be the encoder the captioners'
            training features were extracted with.
        captioners: captioner checkpoint(s), comma-separated; several sharing a vocabulary decode as an ensemble.
        bundle: a checkpoint made by ``python -m captioning.bundle`` (instead of audio_encoder and captioners).
        encoder: architecture of an official PANNs audio_encoder checkpoint (e.g. cnn14).
        out: JSON predictions ``[{"audio_id", "path", "caption"}]``, plus ``"silent": true`` for silent clips.
        csv: DCASE submission CSV ``file_name,caption_predicted`` (silent clips too, unflagged).
        beam_size: beams per clip, 1 = greedy (default: the bundle's, else 3).
        max_len: at most this many words per caption (default: the bundle's, else 30).
        min_len: at least this many words per caption (default: the bundle's, else 1).
        length_norm: alpha of ``score / length ** alpha`` among finished beams (default: the bundle's, else 0).
        rerank: the retrieval checkpoint (``best.pt``) whose audio encoder is ``audio_encoder``: the final beams are
            re-ranked by audio-text similarity (with --audio-encoder and --captioners; a bundle may hold one).
        rerank_weight: weight of that similarity (default: the bundle's, else 1 with --rerank, else 0).
        batch_size: clips per encoder and beam-search batch.
        chunk_seconds: window for long audio (default: the bundle's, else ``features.weights.CHUNK_SECONDS``;
            0 = whole clips).
        runtime: ``torch``, or ``onnx``: a bundle's networks run by ONNX Runtime from ``onnx_dir``.
        onnx_dir: the folder ``python -m captioning.export --bundle BUNDLE --out DIR`` wrote (with --runtime onnx).
        device: where the networks run: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N (with --runtime onnx: the CPU).
        progress: show a progress bar on stderr.
    Returns ``{"captions": {audio_id: caption}, "paths": {audio_id: path}, "errors": {path: reason},
    "silent": [audio_id, ...]}`` (the captioned clips whose audio is silent, in input order).
    """
    if not inputs:
        raise ValueError("No inputs. (expected audio files or folders)")
    if bundle is not None and (audio_encoder is not None or captioners is not None or encoder is not None
                               or rerank is not None):
        raise ValueError("Give either --bundle or --audio-encoder with --captioners (and --rerank), not both")
    if bundle is None and (runtime != "torch" or onnx_dir is not None):
        raise ValueError("--runtime onnx runs a bundle: give --bundle and --onnx-dir")
    if bundle is None and (audio_encoder is None or captioners is None):
        raise ValueError("Missing model. (expected --bundle, or --audio-encoder and --captioners)")
    check_outputs(out=out, csv=csv)  # before any work: a bad output path would otherwise fail after every clip
    files = list_audio(inputs)
    if not files:
        raise ValueError(f"No audio files in {', '.join(map(str, inputs))} (looked for {', '.join(AUDIO_EXTENSIONS)})")
    pipeline = open_pipeline(bundle, audio_encoder=audio_encoder, captioners=captioners, encoder=encoder,
                             rerank=rerank, chunk_seconds=chunk_seconds, runtime=runtime, onnx_dir=onnx_dir,
                             device=device)
    by_path, errors, silent_paths, _ = caption_files(pipeline, files, batch_size=batch_size, progress=progress,
                                                  beam_size=beam_size, max_len=max_len, min_len=min_len,
                                                  length_norm=length_norm, rerank_weight=rerank_weight)
    captions = {Path(p).name: c for p, c in by_path.items()}
    paths = {Path(p).name: p for p in by_path}
    silent = [Path(p).name for p in silent_paths]
    if out is not None or csv is not None:
        write_predictions(captions, out, csv, paths=paths, extra={i: {"silent": True} for i in silent})
    else:
        for audio_id, caption in captions.items():
            print(f"{audio_id}\t{caption}")
    print(f"captioned {len(captions)} of {len(files)} files" + (f"; skipped {len(errors)}" if errors else "")
          + (f"; {len(silent)} silent (flagged)" if silent else ""), file=sys.stderr)
    return {"captions": captions, "paths": paths, "errors": errors, "silent": silent}


@functools.wraps(infer)
def main(*inputs: str, **options: Any) -> None:
    """The command: ``infer``, exiting with status 1 when no file could be captioned."""
    if not infer(*map(str, inputs), **options)["captions"]:
        sys.exit(1)


if __name__ == "__main__":
    run(main, "captioning.infer")
