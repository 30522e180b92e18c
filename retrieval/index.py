"""An audio index: every audio file under a folder embedded by one or more retrieval models, in one HDF5 file that
is kept up to date and searched by text or by a clip.

    python -m retrieval.index build --folder DIR --checkpoints A.pt[,B.pt] --out INDEX.h5 [--captions SPLIT |
        --bundle caption_bundle.pt]
    python -m retrieval.index update --index INDEX.h5
    python -m retrieval.index search --index INDEX.h5 --query "a dog barks" [--top 10]
    python -m retrieval.index similar --index INDEX.h5 --file clip.wav [--top 10]

Every command takes ``--device`` (auto, the default: this process's GPU where there is one, else the CPU; cpu, cuda,
cuda:N): where the models run. Embeddings agree with the CPU's within float rounding.

- **Provenance.** The file records the folder, each checkpoint's path and SHA-256, and per audio file its path
  (relative to the folder), size, modification time and duration. Searching or updating with a checkpoint that
  changed since is refused: its embeddings would not be comparable.
- **Update** re-scans the folder: files gone or changed (size or time) are dropped, new and changed ones embedded,
  the rest kept as they are. Rows are sorted by path, so an update equals a fresh build of the same folder.
- **Captions**, for a person to see what was found: with ``--captions``, each file's first caption in a prepared
  split (the file matched by its path, else its name); with ``--bundle``, the caption the bundle writes, once, when
  the file is indexed. Recorded in the provenance, so an update captions new files the same way.
- **Bad files** (not audio, empty, corrupt) are listed with their reason and skipped; an unchanged bad file is not
  read again by an update.
- **Resume.** Work is saved every ``chunk_files`` files in ``INDEX.parts/``; a killed build or update, run again
  with the same arguments, embeds only what is missing. The index file itself is replaced atomically at the end,
  after its size was checked against the free space: on a full disk the old index stays as it was, the message names
  the device, and a rerun once there is room finishes the job.
- **Clips** are embedded whole, as ``retrieval.search`` and feature extraction do (long audio in windows); with
  several checkpoints, a search averages the models' cosine similarities.
- **Search** is exact (blocks of rows, any size) below ``APPROX_MIN_ROWS`` files, where exact search costs about what
  embedding a text query does, and approximate above (:mod:`retrieval.ann`: faiss IVF, recall@10 >= 0.95 at 100k
  rows, measured by ``benchmarks/bench_index.py``); ``--approximate true/false`` forces either.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from common import checkpoint_paths
from common.cli import run
from common.device import resolve_device
from common.io import atomic_output, atomic_write, read_arrays, write_text_atomic
from features.audio import AudioError, load_audio
from features.manifest import read_manifest
from features.weights import checkpoint_sha256
from retrieval.ann import IVF, cluster, side_by_side
from retrieval.embed import audio_embeddings, text_embeddings
from retrieval.model import BiEncoder
from retrieval.search import AUDIO_SUFFIXES, _check_labels, _check_text, _check_top, _models
from retrieval.zeroshot import DEFAULT_PROMPT

KIND = "aactk.audio_index"
VERSION = 1
SEARCH_BLOCK = 1 << 16  # rows of embeddings read and scored at once
APPROX_MIN_ROWS = 100_000  # from here on, the index stores an IVF clustering and searches approximately
CAPTION_BATCH = 8  # clips captioned at once by a bundle while indexing


def scan(folder: Path) -> dict[str, tuple[int, int]]:
    """Audio files under ``folder`` (recursively): relative path -> (size, modification time in ns), sorted."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            stat = path.stat()
            found[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def _provenance(folder: Path, checkpoints: list[str], captions: str | os.PathLike | None = None,
                bundle: str | os.PathLike | None = None) -> dict[str, Any]:
    provenance = {"kind": KIND, "version": VERSION, "folder": str(folder.resolve()), "checkpoints": [
        {"path": str(Path(c).resolve()), "sha256": checkpoint_sha256(c)} for c in checkpoints]}
    if captions is not None and bundle is not None:
        raise ValueError("Give captions (a prepared split) or a bundle to caption the files, not both")
    if captions is not None:
        provenance["captions"] = {"split": str(Path(captions).resolve())}
    if bundle is not None:
        provenance["captions"] = {"bundle": str(Path(bundle).resolve()), "sha256": checkpoint_sha256(bundle)}
    return provenance


class Captions:
    """Where an index's captions come from (its provenance's ``captions``): a prepared split's first caption per
    file, or a caption bundle run on the audio; none otherwise."""

    def __init__(self, source: dict[str, Any] | None, folder: Path, device: str = "cpu"):
        self.folder, self.by_path, self.by_name, self.pipeline = folder, {}, {}, None
        if source and "split" in source:
            manifest = read_manifest(source["split"])
            for entry in manifest.audio:
                caption = (manifest.captions.get(entry.audio_id) or [""])[0]
                self.by_path[str(Path(entry.path).resolve())] = self.by_name[Path(entry.path).name] = caption
        elif source and "bundle" in source:
            from captioning.bundle import load_bundle

            self.pipeline = load_bundle(source["bundle"], device=device)

    @property
    def rate(self) -> int | None:
        """The sample rate the bundle's encoder reads, or None."""
        return int(self.pipeline.encoder.sample_rate) if self.pipeline is not None else None

    def of(self, names: list[str], waves: dict[str, np.ndarray]) -> dict[str, str]:
        """Captions of ``names`` (``waves``: each at :attr:`rate`, for a bundle); "" where there is none."""
        if self.pipeline is None:
            return {n: self.by_path.get(str((self.folder / n).resolve())) or self.by_name.get(Path(n).name, "")
                    for n in names}
        from captioning.infer import caption_in_batches

        captioned = caption_in_batches(self.pipeline, [waves[n] for n in names], CAPTION_BATCH)
        return {n: caption for n, (caption, _) in zip(names, captioned)}


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """The whole index: ``provenance``, ``paths``, ``sizes``, ``mtimes``, ``durations`` (seconds; NaN in an index
    made before they were recorded), ``captions`` ("" where none), ``embeddings`` (one [N, E] per model),
    ``skipped`` ({path: [size, mtime, reason]}), ``centroids`` and ``lists`` (the IVF clustering, None below
    ``APPROX_MIN_ROWS`` rows). Indexes are shared between people: its structure is checked before anything large is
    read (shapes that agree, the data actually stored), its paths must stay inside its folder, its embeddings must be
    finite. Errors name the file and what is wrong with it."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("kind") != KIND:
                raise ValueError(f"{path}: not an audio index (made by python -m retrieval.index build)")
            provenance = _json_attr(f, "provenance", dict, path)
            checkpoints = provenance.get("checkpoints")
            if not isinstance(provenance.get("folder"), str) or not isinstance(checkpoints, list) or not checkpoints \
                    or not all(isinstance(c, dict) and isinstance(c.get("path"), str) for c in checkpoints):
                raise ValueError(f"{path}: its provenance lacks the folder or the checkpoints (path, sha256) it was "
                                 "built from")
            _check_structure(f, path, len(checkpoints))
            rows = f["paths"].shape[0]
            data = {"provenance": provenance, "paths": [p.decode() for p in f["paths"][:]],
                    "sizes": f["sizes"][:], "mtimes": f["mtimes"][:],
                    "durations": f["durations"][:] if "durations" in f else np.full(rows, np.nan),
                    "captions": [c.decode() for c in f["captions"][:]] if "captions" in f else [""] * rows,
                    "embeddings": [f[f"embeddings/{i}"][:] for i in range(len(checkpoints))],
                    "skipped": _json_attr(f, "skipped", dict, path),
                    **{k: f[f"approximate/{k}"][:] if "approximate" in f else None for k in ("centroids", "lists")}}
    except (OSError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable audio index ({type(err).__name__}: {err})") from None
    for name in data["paths"]:
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"{path}: holds the path {name!r}; an index holds paths inside its folder only")
    for i, emb in enumerate(data["embeddings"]):
        if not np.isfinite(emb).all():
            raise ValueError(f"{path}: model {i}'s embeddings hold non-finite values (NaN or inf); build the index "
                             "again with a sound checkpoint")
    return data


def _json_attr(f: h5py.File, name: str, kind: type, path: str | os.PathLike) -> Any:
    try:
        value = json.loads(f.attrs[name])
    except (ValueError, TypeError):
        raise ValueError(f"{path}: its '{name}' is not JSON") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path}: its '{name}' is not a JSON {kind.__name__}")
    return value


def _check_structure(f: h5py.File, path: str | os.PathLike, models: int) -> None:
    """Every dataset has one row per path and holds the bytes its shape declares (a small file declaring millions of
    rows would otherwise be read into memory as fill values)."""
    rows = f["paths"].shape[0] if f["paths"].ndim == 1 else -1
    expected = {"paths": (rows,), "sizes": (rows,), "mtimes": (rows,), "durations": (rows,), "captions": (rows,)}
    for name, shape in expected.items():
        if name in f and f[name].shape != shape:
            raise ValueError(f"{path}: '{name}' has shape {f[name].shape}, expected {shape} (one per path)")
    for i in range(models):
        dset = f[f"embeddings/{i}"]
        if dset.ndim != 2 or dset.shape[0] != rows or dset.dtype.kind != "f":
            raise ValueError(f"{path}: embeddings/{i} has shape {dset.shape} ({dset.dtype}), expected ({rows}, E) "
                             "floats: one row per path")
        if dset.id.get_storage_size() < dset.size * dset.dtype.itemsize:
            raise ValueError(f"{path}: embeddings/{i} declares {dset.shape} values but stores "
                             f"{dset.id.get_storage_size()} bytes: a damaged or forged index")


def _write_index(path: Path, provenance: dict[str, Any], rows: dict[str, tuple], skipped: dict[str, list],
                 centroids: np.ndarray | None = None) -> None:
    """Write the index atomically, rows sorted by path; from ``APPROX_MIN_ROWS`` rows on with its IVF clustering
    (reusing ``centroids`` where they still suit)."""
    paths = sorted(rows)
    embeddings = [np.stack([rows[p][2][i] for p in paths]) if paths else np.zeros((0, 0), np.float32)
                  for i in range(len(provenance["checkpoints"]))]
    need = sum(emb.nbytes for emb in embeddings) + sum(len(p.encode()) + len(rows[p][4].encode()) + 48 for p in paths)
    with atomic_output(path, need) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["kind"], f.attrs["provenance"] = KIND, json.dumps(provenance)
        f.attrs["skipped"] = json.dumps(dict(sorted(skipped.items())))
        f["paths"] = np.array([p.encode() for p in paths], dtype=h5py.string_dtype())
        f["sizes"] = np.array([rows[p][0] for p in paths], dtype=np.int64)
        f["mtimes"] = np.array([rows[p][1] for p in paths], dtype=np.int64)
        f["durations"] = np.array([rows[p][3] for p in paths], dtype=np.float64)
        f["captions"] = np.array([rows[p][4].encode() for p in paths], dtype=h5py.string_dtype())
        for i, emb in enumerate(embeddings):
            f.create_dataset(f"embeddings/{i}", data=emb)
        if len(paths) >= APPROX_MIN_ROWS:
            f["approximate/centroids"], f["approximate/lists"] = cluster(side_by_side(embeddings), centroids)


def _check_models(provenance: dict[str, Any], index: str | os.PathLike) -> list[str]:
    """The index's checkpoints, refused if any changed since it was built."""
    paths = []
    for entry in provenance["checkpoints"]:
        if not Path(entry["path"]).is_file():
            raise ValueError(f"{index}: its checkpoint {entry['path']} is gone")
        if checkpoint_sha256(entry["path"]) != entry["sha256"]:
            raise ValueError(f"{index}: its checkpoint {entry['path']} changed since the index was built "
                             "(SHA-256 differs); build a new index with it")
        paths.append(entry["path"])
    return paths


def _save_part(path: Path, part: dict[str, Any], n_models: int) -> None:
    """A part as plain arrays (no pickle), written atomically."""
    names = list(part["rows"])
    arrays = {"names": np.array(names, dtype=str), "skipped": np.array(json.dumps(part["skipped"]))}
    arrays["stats"] = np.array([part["rows"][n][:2] for n in names], dtype=np.int64).reshape(-1, 2)
    arrays["durations"] = np.array([part["rows"][n][3] for n in names], dtype=np.float64)
    arrays["captions"] = np.array([part["rows"][n][4] for n in names], dtype=str)
    for i in range(n_models):
        arrays[f"embeddings_{i}"] = np.stack([part["rows"][n][2][i] for n in names]) if names else np.zeros((0, 0))
    with atomic_write(path, "wb", need=sum(a.nbytes for a in arrays.values())) as f:
        np.savez(f, **arrays)


def _load_part(path: Path, n_models: int) -> dict[str, Any]:
    names, stats, durations, captions, skipped, *embeddings = read_arrays(
        path, ["names", "stats", "durations", "captions", "skipped", *(f"embeddings_{i}" for i in range(n_models))],
        "an index's part holds plain arrays only. Delete it and build the index again")
    rows = {str(n): (int(s[0]), int(s[1]), [e[j] for e in embeddings], float(durations[j]), str(captions[j]))
            for j, (n, s) in enumerate(zip(names, stats))}
    return {"rows": rows, "skipped": json.loads(str(skipped))}


def _embed_part(models: list[BiEncoder], folder: Path, names: list[str], found: dict[str, tuple[int, int]],
                captions: Captions) -> dict[str, Any]:
    """Embeddings of ``names`` by each model (rows in order) with their durations and captions, and the files that
    could not be read."""
    part: dict[str, Any] = {"rows": {}, "skipped": {}}
    per_model, durations, texts = [], {}, captions.of(names, {}) if captions.rate is None else {}
    for rate in sorted({model.sample_rate for model in models} | {captions.rate} - {None}):  # decoded once per rate
        waves: dict[str, np.ndarray] = {}
        for name in names:
            try:
                waves[name] = load_audio(folder / name, rate)
                durations.setdefault(name, len(waves[name]) / rate)
            except AudioError as err:
                part["skipped"][name] = [*found[name], err.reason]
        if rate == captions.rate and waves:
            texts.update(captions.of(list(waves), waves))
        per_model += [(model, dict(zip(waves, audio_embeddings(model, list(waves.values())).numpy())) if waves else {})
                      for model in models if model.sample_rate == rate]
    per_model = [emb for model in models for m, emb in per_model if m is model]  # back in the models' order
    for name in names:
        if name in part["skipped"]:
            continue
        row = [emb[name] for emb in per_model]
        if all(np.isfinite(e).all() for e in row):
            part["rows"][name] = (*found[name], row, durations[name], texts[name])
        else:  # never index a NaN or inf: the file is reported instead
            part["skipped"][name] = [*found[name], "the model gave non-finite values (NaN or inf) for it"]
    return part


def sync(folder: str | os.PathLike, checkpoints: str | Sequence[str], out: str | os.PathLike,
         chunk_files: int = 256, stop_after_parts: int | None = None, captions: str | os.PathLike | None = None,
         bundle: str | os.PathLike | None = None, device: str = "cpu") -> dict[str, Any]:
    """Make ``out`` the index of ``folder`` under ``checkpoints``, reusing what ``out`` (if it exists) and a killed
    run's parts already hold; files captioned from the split ``captions`` or by the caption ``bundle``; the models
    on ``device``. ``stop_after_parts`` stops as if killed after that many new parts (tests)."""
    resolve_device(device)  # a bad device is refused before any work
    folder, out = Path(folder), Path(out)
    ckpts = checkpoint_paths(checkpoints)
    provenance = _provenance(folder, ckpts, captions, bundle)
    found = scan(folder)
    rows: dict[str, Any] = {}
    skipped: dict[str, list] = {}
    centroids = None
    if out.exists():  # what an earlier build holds and still describes the folder
        old = read_index(out)
        if old["provenance"] != provenance:
            raise ValueError(f"{out}: built from another folder, other checkpoints or other captions; give another "
                             "--out")
        for i, name in enumerate(old["paths"]):
            if found.get(name) == (int(old["sizes"][i]), int(old["mtimes"][i])):
                rows[name] = (*found[name], [emb[i] for emb in old["embeddings"]], float(old["durations"][i]),
                              old["captions"][i])
        skipped = {k: v for k, v in old["skipped"].items() if found.get(k) == tuple(v[:2])}
        centroids = old["centroids"]
    parts = Path(f"{out}.parts")
    plan = parts / "provenance.json"
    if parts.is_dir() and (not plan.is_file() or json.loads(plan.read_text()) != provenance):
        shutil.rmtree(parts)  # a killed run of other arguments: nothing to reuse
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plan, json.dumps(provenance))
    for part_file in sorted(parts.glob("part_*.npz")):  # a killed run's finished parts
        part = _load_part(part_file, len(ckpts))
        rows.update({k: v for k, v in part["rows"].items() if found.get(k) == tuple(v[:2])})
        skipped.update({k: v for k, v in part["skipped"].items() if found.get(k) == tuple(v[:2])})
    todo = [name for name in found if name not in rows and name not in skipped]
    models = _models(ckpts, device) if todo else []
    captioner = Captions(provenance.get("captions"), folder, device) if todo else None
    start = len(list(parts.glob("part_*.npz")))
    with tqdm(total=len(todo), desc="index", unit="file") as bar:
        for n, i in enumerate(range(0, len(todo), chunk_files)):
            if stop_after_parts is not None and n >= stop_after_parts:
                return {"stopped": True}
            part = _embed_part(models, folder, todo[i:i + chunk_files], found, captioner)
            _save_part(parts / f"part_{start + n:06d}.npz", part, len(ckpts))
            rows.update(part["rows"])
            skipped.update(part["skipped"])
            bar.update(len(todo[i:i + chunk_files]))
    _write_index(out, provenance, rows, skipped, centroids)
    shutil.rmtree(parts)
    summary = {"index": str(out), "files": len(rows), "embedded": len(todo), "skipped": len(skipped)}
    for name, (_, _, reason) in sorted(skipped.items()):
        print(f"skipped {name}: {reason}")
    return summary


def build(folder: str, checkpoints: str, out: str, captions: str | None = None, bundle: str | None = None,
          chunk_files: int = 256, device: str = "auto") -> dict[str, Any]:
    """Embed every audio file under ``folder`` with ``checkpoints`` (comma-separated: an ensemble) into ``out``;
    run again after a kill to finish, or later to bring it up to date.

    Args:
        folder: the audio files (searched recursively).
        checkpoints: retrieval checkpoints (``best.pt``), comma-separated: an ensemble.
        out: the index file (HDF5).
        captions: a prepared split holding these files: each one's first caption is shown beside it.
        bundle: a caption bundle (``python -m captioning.bundle``) that captions each file once, as it is indexed.
        chunk_files: files embedded between two saves (a killed run resumes from the last).
        device: where the models run: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N.
    """
    return sync(folder, checkpoints, out, chunk_files, captions=captions, bundle=bundle, device=device)


def update(index: str, chunk_files: int = 256, device: str = "auto") -> dict[str, Any]:
    """Bring ``index`` up to date with its folder: new and changed files embedded, deleted ones dropped; the
    models on ``device`` (as for build)."""
    resolve_device(device)  # a bad device is refused before any work
    provenance = read_index(index)["provenance"]
    source = provenance.get("captions") or {}
    return sync(provenance["folder"], _check_models(provenance, index), index, chunk_files,
                captions=source.get("split"), bundle=source.get("bundle"), device=device)


def top_k(index: dict[str, Any], queries: list[np.ndarray], k: int) -> list[tuple[str, float]]:
    """The ``k`` rows of ``index`` most similar to ``queries`` (one unit vector per model; similarities averaged),
    best first; exact, scored in blocks of rows."""
    n = len(index["paths"])
    if n == 0:
        return []
    best_scores, best_rows = np.empty(0, np.float32), np.empty(0, np.int64)
    for start in range(0, n, SEARCH_BLOCK):
        scores = sum(emb[start:start + SEARCH_BLOCK] @ q for emb, q in zip(index["embeddings"], queries))
        scores = (scores / len(queries)).astype(np.float32)
        rows = np.arange(start, start + len(scores))
        if len(scores) > k:  # this block's k best, before the exact sort
            rows = start + np.argpartition(-scores, k)[:k]
            scores = scores[rows - start]
        best_scores, best_rows = np.concatenate([best_scores, scores]), np.concatenate([best_rows, rows])
        keep = np.argsort(-best_scores, kind="stable")[:k]
        best_scores, best_rows = best_scores[keep], best_rows[keep]
    return [(index["paths"][r], float(s)) for r, s in zip(best_rows, best_scores)]


class AudioIndex:
    """An index opened once for many searches (a server): its checkpoints checked and loaded, its rows in memory.

    ``paths`` are relative to ``folder``; :meth:`file` turns one back into a file, refusing any other name.
    ``approximate``: search with the IVF the index stores (None: if it stores one; True: clustering it now if not;
    False: exactly). ``device``: where the models embed the queries."""

    def __init__(self, path: str | os.PathLike, approximate: bool | None = None, device: str = "cpu"):
        resolve_device(device)  # a bad device is refused before the index is read
        self.path = Path(path)
        self.data = read_index(path)
        self.folder = Path(self.data["provenance"]["folder"])
        self.paths: list[str] = self.data["paths"]
        self.about = {p: {"caption": c, "duration": None if np.isnan(d) else round(float(d), 2)}
                      for p, c, d in zip(self.paths, self.data["captions"], self.data["durations"])}
        self._rows = set(self.paths)
        self.models = _models(_check_models(self.data["provenance"], path), device)
        self.ivf = None
        if self.paths and (approximate or (approximate is None and self.data["lists"] is not None)):
            x = side_by_side(self.data.pop("embeddings"))  # the IVF holds the rows: no second copy
            plan = (self.data["centroids"], self.data["lists"]) if self.data["lists"] is not None else cluster(x)
            self.ivf = IVF(x, *plan)

    def __len__(self) -> int:
        return len(self.paths)

    def text_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each model's unit vectors [len(texts), E] for ``texts``."""
        return [text_embeddings(model, list(texts)).numpy() for model in self.models]

    def audio_queries(self, file: str | os.PathLike) -> list[np.ndarray]:
        """Each model's unit vector [E] for the audio ``file`` (AudioError when it cannot be read)."""
        waves = {rate: load_audio(file, rate) for rate in {model.sample_rate for model in self.models}}
        return [audio_embeddings(model, [waves[model.sample_rate]])[0].numpy() for model in self.models]

    def search(self, query: str, top: int = 10) -> list[tuple[str, float]]:
        """The ``top`` files for the text ``query``, best first, with their mean cosine similarity."""
        query, top = _check_text(query, "query"), _check_top(top)
        return self._top([q[0] for q in self.text_queries([query])], top)

    def similar(self, file: str | os.PathLike, top: int = 10) -> list[tuple[str, float]]:
        """The ``top`` files that sound most like the audio ``file``."""
        return self._top(self.audio_queries(file), _check_top(top))

    def _top(self, queries: list[np.ndarray], k: int) -> list[tuple[str, float]]:
        if self.ivf is None:
            return top_k(self.data, queries, k)
        rows, scores = self.ivf.search(queries, k)
        return [(self.paths[r], float(s)) for r, s in zip(rows, scores)]

    def labels(self, file: str | os.PathLike, labels: Sequence[str], prompt: str = DEFAULT_PROMPT
               ) -> list[tuple[str, float]]:
        """Zero-shot: ``labels`` ranked by the similarity of the ``file``'s audio to ``prompt`` about each."""
        labels = _check_labels(labels)
        audio = self.audio_queries(file)
        texts = self.text_queries([prompt.format(label=label) for label in labels])
        scores = sum(t @ a for t, a in zip(texts, audio)) / len(audio)
        return [(labels[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]

    def file(self, name: str) -> Path:
        """The indexed file ``name`` (a path relative to the folder, as search returns it); KeyError for any name
        the index does not hold, and for one whose real path (symlinks followed) leaves the folder or is not an audio
        file, so no other file can be reached through it."""
        if name not in self._rows:
            raise KeyError(name)
        file = (self.folder / name).resolve()  # symlinks followed: the file itself must lie inside the folder
        if not file.is_relative_to(self.folder.resolve()) or file.suffix.lower() not in AUDIO_SUFFIXES:
            raise KeyError(name)
        return file


def search(index: str, query: str, top: int = 10, approximate: bool | None = None, device: str = "auto"
           ) -> dict[str, Any]:
    """The ``top`` files of ``index`` for the text ``query``: ``{"query", "results": [[path, score], ...]}``
    (``approximate``: true/false forces the IVF or exact search; default: as the index's size decides)."""
    query, top = _check_text(query, "query"), _check_top(top)
    found = AudioIndex(index, approximate, device).search(query, top)
    return {"query": query, "results": [list(r) for r in found]}


def similar(index: str, file: str, top: int = 10, approximate: bool | None = None, device: str = "auto"
            ) -> dict[str, Any]:
    """The ``top`` files of ``index`` that sound most like the audio ``file`` (``approximate`` as for search)."""
    top = _check_top(top)
    return {"file": file, "results": [list(r) for r in AudioIndex(index, approximate, device).similar(file, top)]}


if __name__ == "__main__":
    run({"build": build, "update": update, "search": search, "similar": similar}, "retrieval.index",
        text_args=("query",))
