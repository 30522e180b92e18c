"""Prepare a corpus into manifests (see :mod:`features.manifest`): ``<out>/<split>/{wav.csv,captions.json,errors.csv}``.

Every clip is probed (read in full, in a process pool): bad files are reported with their reason, printed and in
``errors.csv``, and the good ones are prepared. Short sounds are good ones: any clip with at least one sample is kept
(its real duration in ``wav.csv``), and the stages that encode audio zero-pad it to ``features.audio.MIN_SECONDS``;
``--min-duration``/``--max-duration`` refuse clips outside a range on request. Nothing is downloaded.

    python -m corpus.prepare clotho --root DIR --out OUT [--splits development,validation,evaluation]
    python -m corpus.prepare clotho --audio-dir DIR --captions-csv FILE --split NAME --out OUT
    python -m corpus.prepare audiocaps --csv-dir DIR --audio-dir DIR --out OUT [--splits train,val,test]
    python -m corpus.prepare macs --yaml MACS.yaml --audio-dir TAU_AUDIO_DIR --out OUT [--split train]
    python -m corpus.prepare synth --root DIR --out OUT
    python -m corpus.prepare esc50|urbansound8k|fsd50k --root DIR --out OUT
    python -m corpus.prepare labels --audio-dir DIR --labels-csv FILE --split NAME --out OUT

Label-only corpora (:mod:`corpus.labelled`) get ``<out>/<split>/labels.json`` and no captions.

The synthetic corpus also gets ``<out>/<split>/labels.json`` (each clip's sound types, e.g. ``["bell", "dog"]``,
for classification) and ``<out>/<split>/qa.json``, questions about each clip with answers true by
construction, for audio question answering (:mod:`corpus.synth.questions` makes them from the scene metadata the
generator wrote; :func:`eval.qa.read_qa` reads them)::

    {"<audio_id>": [{"question": "Is there a dog barking?", "answer": "yes", "type": "presence"}, ...], ...}

with the audio ids of ``captions.json``, in its order.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import dataclasses
import functools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from common.cli import run
from common.io import csv_text, write_text_atomic
from eval.tokenizer import simple_tokenize
from features.audio import AudioError, AudioInfo, check_duration, probe
from corpus import audiocaps, clotho, labelled, macs
from corpus.source import SplitSource
from corpus.synth.questions import split_annotations
from features.manifest import AudioEntry, Manifest, read_manifest, write_manifest

MISSING_CSV = "missing.csv"
QA_JSON = "qa.json"  # the name eval.qa reads
RESPLIT_JSON = "resplit.json"  # which clips a Clotho re-split dealt to which split
SYNTH_SPLITS = clotho.SPLITS  # the synthetic corpus is written in Clotho's layout


@dataclass
class SplitReport:
    """What preparing one split did."""

    split: str
    out_dir: Path
    clips: int
    captions: int
    errors: list[tuple[str, str]]  # (path, reason) of refused files
    missing: list[tuple[str, str]] = field(default_factory=list)  # (audio_id, detail), AudioCaps only
    dropped: list[str] = field(default_factory=list)  # dropped-caption notes
    silent: list[str] = field(default_factory=list)  # ids of kept, silent clips
    questions: int | None = None  # question-answer pairs in qa.json, synthetic corpus only
    labelled: int = 0  # clips with class labels (labels.json)

    def summary(self) -> str:
        qa = "" if self.questions is None else f", {self.questions} questions"
        labelled = f", {self.labelled} labelled" if self.labelled else ""
        lines = [f"[{self.split}] {self.clips} clips, {self.captions} captions{labelled}{qa} -> {self.out_dir}"]
        lines += [f"  bad file: {path}: {reason}" for path, reason in self.errors]
        lines += [f"  dropped caption: {note}" for note in self.dropped]
        lines += [f"  silent (kept): {audio_id}" for audio_id in self.silent]
        if self.missing:
            lines.append(f"  {len(self.missing)} clips absent on disk, listed in {self.out_dir / MISSING_CSV}")
        lines.append(f"  {len(self.errors)} bad files, listed in {self.out_dir / 'errors.csv'}")
        return "\n".join(lines)


def _check_one(path: str, min_duration: float, max_duration: float | None) -> AudioInfo | str:
    """Probe one file in a worker: its info, or the reason it is refused (exceptions don't cross cleanly)."""
    try:
        info = probe(path)
        check_duration(path, info.duration, min_duration, max_duration)
        return info
    except AudioError as err:
        return err.reason
    except Exception as err:  # an unexpected failure on one file must not lose the others
        return f"unexpected error: {type(err).__name__}: {err}"


def probe_all(paths: Sequence[str], *, workers: int = 2, min_duration: float = 0.0,
              max_duration: float | None = None, desc: str = "probing") -> list[AudioInfo | str]:
    """Probe ``paths`` (in order) with ``workers`` processes; each result is an AudioInfo or a refusal reason.
    ``min_duration``/``max_duration`` (s) refuse clips outside that range; by default any clip with a sample is kept."""
    check = functools.partial(_check_one, min_duration=min_duration, max_duration=max_duration)
    results: list[AudioInfo | str] = []
    with tqdm(total=len(paths), desc=desc, unit="file", file=sys.stderr) as progress:
        if workers <= 1 or len(paths) <= 1:
            for result in map(check, paths):
                results.append(result)
                progress.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunk = max(1, min(32, len(paths) // (4 * workers)))  # few round trips, still a smooth bar
                for result in pool.map(check, paths, chunksize=chunk):
                    results.append(result)
                    progress.update()
    return results


def prepare_split(source: SplitSource, out: str | os.PathLike, *, workers: int = 2, min_duration: float = 0.0,
                  max_duration: float | None = None,
                  extras: Callable[[Manifest], dict[str, str]] | None = None) -> SplitReport:
    """Probe every clip of ``source``, write the manifest of the good ones into ``<out>/<split>/``, report.

    Captions without a word (punctuation only, which tokenizes to nothing) are dropped and listed in ``errors.csv``
    with the clip; a captioned clip left with none is refused. ``extras(manifest)`` gives more files of the split
    (name -> text), written with it as one unit.
    """
    results = probe_all([c.path for c in source.clips], workers=workers, min_duration=min_duration,
                        max_duration=max_duration, desc=source.split)
    audio, captions, labels, silent = [], {}, {}, []
    errors = list(source.errors)
    for clip, result in zip(source.clips, results):
        wordless = [c for c in clip.captions if not simple_tokenize(c)]
        errors += [(os.path.abspath(clip.path), f"caption {c!r} has no words (punctuation only): dropped")
                   for c in wordless]
        if clip.captions and len(wordless) == len(clip.captions):
            result = "no caption with a word: every caption is punctuation only"
        if isinstance(result, str):
            errors.append((os.path.abspath(clip.path), result))
            continue
        audio.append(AudioEntry(clip.audio_id, os.path.abspath(clip.path), result.duration,
                                result.sample_rate, result.channels))
        if clip.captions:
            captions[clip.audio_id] = [c for c in clip.captions if c not in wordless]
        if clip.labels:
            labels[clip.audio_id] = list(clip.labels)
        if result.silent:
            silent.append(clip.audio_id)
    manifest = Manifest(source.split, audio, captions, errors, labels)
    files = extras(manifest) if extras else {}
    if source.missing is not None:
        files[MISSING_CSV] = csv_text(("audio_id", "start_time"), source.missing)
    split_dir = write_manifest(manifest, out, files)
    return SplitReport(source.split, split_dir, len(audio), sum(map(len, captions.values())), errors,
                       list(source.missing or []), list(source.dropped), silent, labelled=len(labels))


def _split_names(splits: str | Sequence[str]) -> list[str]:
    """Accept "a,b" or a sequence (fire turns "a,b" into a tuple)."""
    names = splits.split(",") if isinstance(splits, str) else list(splits)
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise ValueError("no splits given")
    return names


def prepare_clotho(out: str | os.PathLike, *, root: str | os.PathLike | None = None,
                   splits: str | Sequence[str] = clotho.SPLITS, audio_dir: str | os.PathLike | None = None,
                   captions_csv: str | os.PathLike | None = None, split: str | None = None, workers: int = 2,
                   min_duration: float = 0.0, max_duration: float | None = None, resplit: float | None = None,
                   seed: int = 0) -> list[SplitReport]:
    """Prepare Clotho from ``root`` (as distributed) or from one explicit ``audio_dir`` + ``captions_csv`` + ``split``.

    ``resplit`` (from ``root``): merge the first two ``splits`` and deal them again, that share to the first
    (:func:`corpus.clotho.resplit`, seeded by ``seed``), recorded in ``<out>/resplit.json``. All caption tables are
    read before any audio is probed, so a broken table stops the run before anything is written.
    """
    if audio_dir is not None or captions_csv is not None or split is not None:
        if root is not None or audio_dir is None or captions_csv is None or split is None:
            raise ValueError("give either root (with splits) or all of audio_dir, captions_csv and split")
        sources = [clotho.read_split(audio_dir, captions_csv, str(split))]
    elif root is not None:
        if not Path(root).is_dir():
            raise ValueError(f"{root}: Clotho root not found")
        sources = [clotho.read_split(*clotho.split_paths(root, name), name) for name in _split_names(splits)]
    else:
        raise ValueError("give root, or audio_dir + captions_csv + split")
    if resplit is not None:
        if root is None:
            raise ValueError("a re-split needs root with its splits (development,validation,...)")
        sources = clotho.resplit(sources, resplit, seed)
        record = {"merged": [s.split for s in sources[:2]], "share": resplit, "seed": seed,
                  **{s.split: [c.audio_id for c in s.clips] for s in sources[:2]}}
        Path(out).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(out) / RESPLIT_JSON, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return [prepare_split(s, out, workers=workers, min_duration=min_duration, max_duration=max_duration)
            for s in sources]


def prepare_audiocaps(out: str | os.PathLike, *, csv_dir: str | os.PathLike, audio_dir: str | os.PathLike,
                      splits: str | Sequence[str] = audiocaps.SPLITS, workers: int = 2, min_duration: float = 0.0,
                      max_duration: float | None = None) -> list[SplitReport]:
    """Prepare AudioCaps from its caption tables in ``csv_dir`` and whatever clips ``audio_dir`` holds."""
    index = audiocaps.index_audio(audio_dir)
    sources = [audiocaps.read_split(csv_dir, index, name) for name in _split_names(splits)]
    return [prepare_split(s, out, workers=workers, min_duration=min_duration, max_duration=max_duration)
            for s in sources]


def prepare_macs(out: str | os.PathLike, *, yaml_path: str | os.PathLike, audio_dir: str | os.PathLike,
                 split: str = "train", workers: int = 2, min_duration: float = 0.0,
                 max_duration: float | None = None) -> list[SplitReport]:
    """Prepare MACS (:mod:`corpus.macs`): one split of captions, with each clip's annotation tags as labels."""
    return [prepare_split(macs.read_macs(yaml_path, audio_dir, split), out, workers=workers,
                          min_duration=min_duration, max_duration=max_duration)]


def prepare_synth(out: str | os.PathLike, *, root: str | os.PathLike, workers: int = 2) -> list[SplitReport]:
    """Prepare the built-in synthetic corpus, already written under ``root`` in Clotho's layout, and write each
    split's ``qa.json`` (see the module docstring).

    The caption tables and the scene metadata are all read before any audio is probed, so a missing or broken one
    stops the run before anything is written.
    """
    missing = [str(p) for name in SYNTH_SPLITS for p in clotho.split_paths(root, name) if not p.exists()]
    if missing:
        raise ValueError(f"{root}: no synthetic corpus there (missing {', '.join(missing)}); write it first")
    sources = [clotho.read_split(*clotho.split_paths(root, name), name) for name in SYNTH_SPLITS]
    annotations = {name: split_annotations(root, name) for name in SYNTH_SPLITS}
    for source in sources:
        absent = [clip.audio_id for clip in source.clips if clip.audio_id not in annotations[source.split][0]]
        if absent:
            raise ValueError(f"{Path(root) / f'synth_metadata_{source.split}.json'}: no scene for {len(absent)} "
                             f"clip(s) of the {source.split} caption table, e.g. {absent[:3]}")
    reports = []
    for source in sources:
        qa, labels = annotations[source.split]
        source.clips = [dataclasses.replace(clip, labels=labels[clip.audio_id]) for clip in source.clips]
        split_qa = {}

        def qa_file(manifest: Manifest) -> dict[str, str]:
            split_qa.update({i: qa[i] for i in manifest.ids})
            return {QA_JSON: json.dumps(split_qa, indent=1, ensure_ascii=False) + "\n"}

        report = prepare_split(source, out, workers=workers, extras=qa_file)
        report.questions = sum(map(len, split_qa.values()))
        reports.append(report)
    return reports


LABELLED_READERS = {"esc50": labelled.read_esc50, "urbansound8k": labelled.read_urbansound8k,
                    "fsd50k": labelled.read_fsd50k}


def prepare_labelled(corpus: str, out: str | os.PathLike, *, root: str | os.PathLike, workers: int = 2,
                     min_duration: float = 0.0, max_duration: float | None = None) -> list[SplitReport]:
    """Prepare a label-only corpus (``esc50``, ``urbansound8k``, ``fsd50k``; :mod:`corpus.labelled`) from ``root``
    as distributed: every table is read and checked before any audio is probed."""
    if not Path(root).is_dir():
        raise ValueError(f"{root}: {corpus} root not found")
    sources = [s for s in LABELLED_READERS[corpus](root) if s.clips or s.errors]
    return [prepare_split(s, out, workers=workers, min_duration=min_duration, max_duration=max_duration)
            for s in sources]


def _finish(reports: list[SplitReport]) -> None:
    for report in reports:
        print(report.summary())
    if any(r.clips == 0 for r in reports):
        raise SystemExit("error: a split has no usable clip (see the bad files above)")


class Commands:
    """Prepare a corpus into manifests: <out>/<split>/wav.csv, captions.json, errors.csv (+ missing.csv for AudioCaps).

    Every clip is read in full; bad files (missing, empty or without samples, not audio, truncated, NaN samples,
    outside --min-duration/--max-duration when given) are printed with their reason and listed in errors.csv, and
    the good ones are prepared. Clips of any length are kept by default: encoders zero-pad those shorter than 0.1 s.
    Nothing is downloaded.
    """

    def clotho(self, out: str, root: str | None = None, splits: str = ",".join(clotho.SPLITS),
               audio_dir: str | None = None, captions_csv: str | None = None, split: str | None = None,
               workers: int = 2, min_duration: float = 0.0, max_duration: float | None = None,
               resplit: float | None = None, seed: int = 0) -> None:
        """Clotho: --root DIR (holding clotho_audio_<split>/ and clotho_captions_<split>.csv), or one split from
        --audio-dir DIR --captions-csv FILE --split NAME.

        Args:
            out: output folder; each split goes into <out>/<split>/.
            root: Clotho as distributed.
            splits: comma-separated split names under root.
            audio_dir: folder of one split's clips (instead of root).
            captions_csv: that split's caption table (header file_name,caption_1..caption_5).
            split: name of that split in the output.
            workers: processes probing audio.
            min_duration: clips shorter than this (seconds) are refused; none by default (shorter than 0.1 s
                is fine: encoders zero-pad them to 0.1 s).
            max_duration: clips longer than this (seconds) are refused; none by default.
            resplit: merge the first two splits (development, validation) and deal them again, this share to the
                first (0.9: the SJTU report's 9:1), by a permutation seeded with --seed; <out>/resplit.json lists
                which clip went where.
            seed: the re-split's seed.
        """
        _finish(prepare_clotho(out, root=root, splits=splits, audio_dir=audio_dir, captions_csv=captions_csv,
                               split=split, workers=workers, min_duration=min_duration, max_duration=max_duration,
                               resplit=resplit, seed=seed))

    def audiocaps(self, out: str, csv_dir: str, audio_dir: str, splits: str = ",".join(audiocaps.SPLITS),
                  workers: int = 2, min_duration: float = 0.0, max_duration: float | None = None) -> None:
        """AudioCaps: caption tables <split>.csv or audiocaps_v2_<split>.csv in --csv-dir, clips under --audio-dir
        named <yid>, Y<yid>, <yid>_<start> or <yid>_<start>_<end> (.wav/.flac/.ogg). Absent clips are listed in
        missing.csv, not fatal.

        Args:
            out: output folder; each split goes into <out>/<split>/.
            csv_dir: folder of the caption tables.
            audio_dir: folder (searched recursively) of the downloaded clips.
            splits: comma-separated split names.
            workers: processes probing audio.
            min_duration: clips shorter than this (seconds) are refused; none by default (shorter than 0.1 s
                is fine: encoders zero-pad them to 0.1 s).
            max_duration: clips longer than this (seconds) are refused; none by default.
        """
        _finish(prepare_audiocaps(out, csv_dir=csv_dir, audio_dir=audio_dir, splits=splits, workers=workers,
                                  min_duration=min_duration, max_duration=max_duration))

    def macs(self, out: str, yaml: str, audio_dir: str, split: str = "train", workers: int = 2,
             min_duration: float = 0.0, max_duration: float | None = None) -> None:
        """MACS: captions and tags from MACS.yaml for the TAU Urban Acoustic Scenes 2019 development clips it
        names, as one split (captioning pre-training data); the tags go to labels.json.

        Args:
            out: output folder; the split goes into <out>/<split>/.
            yaml: MACS.yaml (files: [{filename, annotations: [{annotator_id, sentence, tags}]}]).
            audio_dir: the TAU clips' folder (TAU-urban-acoustic-scenes-2019-development/audio).
            split: the split's name.
            workers: processes probing audio.
            min_duration: clips shorter than this (seconds) are refused; none by default.
            max_duration: clips longer than this (seconds) are refused; none by default.
        """
        _finish(prepare_macs(out, yaml_path=yaml, audio_dir=audio_dir, split=split, workers=workers,
                             min_duration=min_duration, max_duration=max_duration))

    def esc50(self, out: str, root: str, workers: int = 2) -> None:
        """ESC-50: --root DIR holding meta/esc50.csv and audio/; one split per fold (fold1..fold5), labels from the
        category column.

        Args:
            out: output folder; each fold goes into <out>/fold<k>/ with labels.json.
            root: ESC-50 as distributed.
            workers: processes probing audio.
        """
        _finish(prepare_labelled("esc50", out, root=root, workers=workers))

    def urbansound8k(self, out: str, root: str, workers: int = 2) -> None:
        """UrbanSound8K: --root DIR holding metadata/UrbanSound8K.csv and audio/fold<k>/; one split per fold
        (fold1..fold10), labels from the class column.

        Args:
            out: output folder; each fold goes into <out>/fold<k>/ with labels.json.
            root: UrbanSound8K as distributed.
            workers: processes probing audio.
        """
        _finish(prepare_labelled("urbansound8k", out, root=root, workers=workers))

    def fsd50k(self, out: str, root: str, workers: int = 2) -> None:
        """FSD50K: --root DIR holding FSD50K.ground_truth/{dev,eval}.csv, FSD50K.dev_audio/ and FSD50K.eval_audio/;
        splits train and val (dev.csv's split column) and eval, each clip's comma-separated labels.

        Args:
            out: output folder; each split goes into <out>/<split>/ with labels.json.
            root: FSD50K as distributed.
            workers: processes probing audio.
        """
        _finish(prepare_labelled("fsd50k", out, root=root, workers=workers))

    def labels(self, out: str, audio_dir: str, labels_csv: str, split: str, workers: int = 2) -> None:
        """Any labelled folder: --labels-csv FILE with columns file_name,labels (labels separated by ';') and the
        clips in --audio-dir, as one split.

        Args:
            out: output folder; the split goes into <out>/<split>/ with labels.json.
            audio_dir: folder of the clips (file_name is relative to it).
            labels_csv: the label table.
            split: name of the split in the output.
            workers: processes probing audio.
        """
        _finish([prepare_split(labelled.read_label_csv(audio_dir, labels_csv, split), out, workers=workers)])

    def synth(self, out: str, root: str, workers: int = 2) -> None:
        """The built-in synthetic corpus in --root (Clotho layout; splits development, validation, evaluation), with
        questions and answers about each clip in <out>/<split>/qa.json (from the generator's scene metadata).

        Args:
            out: output folder; each split goes into <out>/<split>/.
            root: folder the synthetic corpus was written into.
            workers: processes probing audio.
        """
        _finish(prepare_synth(out, root=root, workers=workers))


if __name__ == "__main__":
    run(Commands(), "corpus.prepare")
