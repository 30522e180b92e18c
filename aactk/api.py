"""The toolkit from Python (a notebook, a script): the same code the commands run, behind three names.

    import aactk

    captioner = aactk.Captioner.load("exp/synth/serve/caption_bundle.pt")
    for row in captioner.caption(["clips/", "dog.wav"]):       # files and folders, as captioning.infer takes them
        print(row["audio_id"], row["caption"], round(row["score"], 2), row["silent"])
    captioner.caption(samples, sample_rate=44100)               # NumPy arrays: (samples,) or (channels, samples)

    retriever = aactk.Retriever.load("exp/synth/retrieval_cnn10/best.pt")   # several, comma-separated: an ensemble
    audio = retriever.embed_audio(["a.wav", "b.wav"])          # [2, E]; text: retriever.embed_text(["a dog barks"])
    retriever.search("a dog barks", "clips/", top=5)            # [(audio id, similarity), ...], best first
    retriever.classify("a.wav", ["dog", "rain", "siren"])       # zero-shot: [(label, similarity), ...], best first

    index = aactk.open_index("sounds.h5")                       # built by aactk.build_index (aactk index build)
    index.search("rain on a roof", top=5); index.similar("a.wav", top=5)

Audio is read, resampled and mixed to mono as every command reads it (``features.audio``); a file that cannot be used
is reported in its row (``"error"``) or, where a single clip was asked for, raised as ``features.audio.AudioError``
naming it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from captioning.bundle import Pipeline, open_pipeline
from captioning.infer import caption_files, caption_in_batches, list_audio
from features.audio import is_silent, load_audio, prepare_waveform
from retrieval.zeroshot import DEFAULT_PROMPT

Audio = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]


def _as_list(audio: Audio) -> list:
    """One input (a path or an array) or a list of them -> a list."""
    if isinstance(audio, (str, os.PathLike, np.ndarray)):
        return [audio]
    if hasattr(audio, "numpy") and not isinstance(audio, (list, tuple)):  # a torch tensor
        return [audio]
    items = list(audio)
    if not items:
        raise ValueError("No audio. (expected a file, a folder, an array, or a list of them)")
    return items


def _array(samples: Any, sample_rate: int | None, target_rate: int, name: str) -> np.ndarray:
    """An array given in memory -> float32 mono at ``target_rate`` (the encoder's), as a file would be read."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"{name}: an array needs its sample_rate (a positive integer, found {sample_rate!r})")
    samples = np.asarray(samples.numpy() if hasattr(samples, "numpy") else samples, dtype=np.float64)
    if samples.ndim == 2:  # channels are the shorter axis: (channels, samples) or (samples, channels)
        samples = samples.mean(axis=int(np.argmin(samples.shape)))
    if samples.ndim != 1:
        raise ValueError(f"{name}: expected (samples,) or (channels, samples), found shape {samples.shape}")
    return prepare_waveform(samples, sample_rate, target_rate, name)


class Captioner:
    """Captions audio with a frozen audio encoder and one or more captioners (an ensemble), as
    ``captioning.infer`` does; load a bundle (``python -m captioning.bundle``, or a recipe's
    ``serve/caption_bundle.pt``) or the separate checkpoints.

    Example::

        captioner = Captioner.load("exp/synth/serve/caption_bundle.pt")
        captioner.caption("dog.wav")[0]["caption"]    # 'a dog barks twice while cars pass by'
    """

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, *, audio_encoder: str | None = None,
             captioners: str | Sequence[str] | None = None, rerank: str | None = None,
             chunk_seconds: float | None = None, runtime: str = "torch",
             onnx_dir: str | os.PathLike | None = None, device: str = "auto") -> "Captioner":
        """A bundle, or ``audio_encoder`` (``audio_encoder.pt``) with ``captioners`` (comma-separated or a list) and
        optionally ``rerank`` (the retrieval ``best.pt`` whose encoder that is). ``runtime="onnx"`` runs a bundle's
        networks with ONNX Runtime from ``onnx_dir`` (``python -m captioning.export``). ``device``: where the
        networks run (auto: a GPU where there is one, else the CPU; cpu, cuda, cuda:N)."""
        if (bundle is None) == (audio_encoder is None or captioners is None):
            raise ValueError("Give a bundle, or audio_encoder and captioners (not both)")
        return cls(open_pipeline(bundle, audio_encoder=audio_encoder, captioners=captioners, rerank=rerank,
                                 chunk_seconds=chunk_seconds, runtime=runtime, onnx_dir=onnx_dir, device=device))

    @property
    def sample_rate(self) -> int:
        """The rate the audio encoder works at; other rates are resampled to it."""
        return int(self.pipeline.encoder.sample_rate)

    def caption(self, audio: Audio, *, sample_rate: int | None = None, batch_size: int = 8, progress: bool = False,
                **decoding: Any) -> list[dict[str, Any]]:
        """Caption files, folders (their .wav/.flac/.ogg files, sorted) or arrays (with their ``sample_rate``).

        ``decoding`` overrides the bundle's: ``beam_size``, ``max_len``, ``min_len``, ``length_norm``,
        ``rerank_weight``. Returns one row per clip, in input order: ``{"audio_id", "path" (None for an array),
        "caption", "score" (mean log-probability per word, higher is surer), "silent"}``; a file that could not be
        used has ``"caption": None`` and ``"error"``, its reason.
        """
        items = _as_list(audio)
        arrays = [i for i in items if not isinstance(i, (str, os.PathLike))]
        if arrays and len(arrays) != len(items):
            raise ValueError("Give files and folders, or arrays, not both in one call")
        if arrays:
            return self._caption_arrays(arrays, sample_rate, batch_size, decoding)
        files = list_audio(items)
        if not files:
            raise ValueError(f"No audio files in {', '.join(map(str, items))}")
        done = caption_files(self.pipeline, files, batch_size=batch_size, progress=progress, **decoding)
        rows = []
        for file in map(str, files):
            row = {"audio_id": Path(file).name, "path": file}
            if file in done.captions:
                row.update(caption=done.captions[file], score=done.scores[file], silent=file in done.silent)
            else:
                row.update(caption=None, score=None, silent=None, error=done.errors[file])
            rows.append(row)
        return rows

    def _caption_arrays(self, arrays: list, sample_rate: int | None, batch_size: int,
                        decoding: dict[str, Any]) -> list[dict[str, Any]]:
        waves = [_array(a, sample_rate, self.sample_rate, f"array {i}") for i, a in enumerate(arrays)]
        captioned = caption_in_batches(self.pipeline, waves, batch_size, **decoding)
        return [{"audio_id": f"array_{i}", "path": None, "caption": caption, "score": score, "silent": is_silent(wave)}
                for i, (wave, (caption, score)) in enumerate(zip(waves, captioned))]


class Retriever:
    """Embeds audio and text in one space with retrieval model(s) (an ensemble: each model's unit vectors side by
    side, scaled so that a dot product is the models' mean cosine similarity), and searches and classifies with it.

    Example::

        retriever = Retriever.load("exp/synth/retrieval_cnn10/best.pt")
        retriever.search("a dog barks", "clips/", top=1)    # [('dog.wav', 0.61)]
    """

    def __init__(self, models: list):
        self.models = models

    @classmethod
    def load(cls, checkpoints: str | Sequence[str], *, device: str = "auto") -> "Retriever":
        """Retrieval checkpoints (``best.pt``; comma-separated or a list: an ensemble), on ``device`` (as for
        :meth:`Captioner.load`)."""
        from retrieval.search import _models

        return cls(_models(checkpoints, device))

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> [N, E] float32 (one text: [1, E])."""
        from retrieval.embed import text_embeddings
        from retrieval.search import _check_text

        texts = [_check_text(t, "text") for t in ([texts] if isinstance(texts, str) else texts)]
        if not texts:
            raise ValueError("No texts. (expected a text or a list of texts)")
        return self._side_by_side([text_embeddings(model, texts).numpy() for model in self.models])

    def embed_audio(self, audio: Audio, *, sample_rate: int | None = None) -> np.ndarray:
        """Files or arrays (with their ``sample_rate``) -> [N, E] float32, in input order (folders are for
        :meth:`search`). A file that cannot be used raises ``AudioError`` naming it."""
        from retrieval.embed import audio_embeddings

        items = _as_list(audio)
        vectors = []
        for model in self.models:
            rate = int(model.sample_rate)
            waves = [load_audio(i, rate) if isinstance(i, (str, os.PathLike)) else
                     _array(i, sample_rate, rate, f"array {n}") for n, i in enumerate(items)]
            vectors.append(audio_embeddings(model, waves).numpy())
        return self._side_by_side(vectors)

    def _side_by_side(self, vectors: list[np.ndarray]) -> np.ndarray:
        from retrieval.ann import side_by_side

        return side_by_side(vectors) / np.float32(np.sqrt(len(vectors)))  # a dot product: the mean cosine

    def search(self, query: str, audio: str | os.PathLike, top: int = 10) -> list[tuple[str, float]]:
        """The ``top`` clips of ``audio`` (a folder, searched recursively, or a manifest split) for the text
        ``query``, best first, with their similarity; unreadable files are left out (as ``retrieval.search``)."""
        from retrieval.search import _check_text, _check_top, rank_clips

        return rank_clips(self.models, _check_text(query, "query"), audio, _check_top(top))[0]

    def classify(self, audio: str | os.PathLike | np.ndarray, labels: Sequence[str], *, sample_rate: int | None = None,
                 prompt: str = DEFAULT_PROMPT) -> list[tuple[str, float]]:
        """Zero-shot: ``labels`` ranked for one clip by the similarity of its audio to ``prompt`` about each (CLAP's
        prompt by default), best first."""
        from retrieval.search import _check_labels

        labels = _check_labels(labels)
        scores = self.embed_text([prompt.format(label=label) for label in labels]) @ \
            self.embed_audio(audio, sample_rate=sample_rate)[0]
        return [(labels[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def open_index(path: str | os.PathLike, approximate: bool | None = None, *, device: str = "auto"):
    """An audio index (``retrieval.index.AudioIndex``) opened for many searches: ``.search(text, top)``,
    ``.similar(file, top)``, ``.labels(file, labels)``, each a list of (name, similarity), best first; its models
    on ``device`` (as for :meth:`Captioner.load`)."""
    from retrieval.index import AudioIndex

    return AudioIndex(path, approximate, device)


def build_index(folder: str | os.PathLike, checkpoints: str | Sequence[str], out: str | os.PathLike, *,
                captions: str | os.PathLike | None = None, bundle: str | os.PathLike | None = None,
                chunk_files: int = 256, device: str = "auto") -> dict[str, Any]:
    """Embed every audio file under ``folder`` into the index ``out`` (run again to resume or bring it up to
    date), as ``python -m retrieval.index build`` does; each file captioned from the prepared split ``captions``,
    or by the caption ``bundle`` as it is indexed; the models on ``device`` (as for :meth:`Captioner.load`)."""
    from retrieval.index import sync

    return sync(folder, checkpoints, out, chunk_files, captions=captions, bundle=bundle, device=device)
