"""The captioning pipeline (frozen audio encoder + captioner ensemble), from separate checkpoints or one bundle.

    python -m captioning.bundle --audio-encoder exp/retrieval/audio_encoder.pt \
        --captioners exp/cap_a/averaged.pt,exp/cap_b/averaged.pt --out model/caption_bundle.pt [--beam-size 3] \
        [--rerank exp/retrieval/best.pt --rerank_weight 2]

A bundle is one plain-data checkpoint (``torch.load(..., weights_only=True)``) holding everything
``python -m captioning.infer --bundle`` needs::

    kind                  "caption_bundle"
    model_args            {"audio_encoder": encoder spec, "captioners": [captioner model_args, ...]}
    state_dict            {"audio_encoder.<key>": ..., "captioners.<i>.<key>": ...}
    vocab                 [word, ...] shared by the captioners (prefix-LM captioners: their LM's fingerprint)
    feature_attrs         what made the features the captioners were trained on (encoder, checkpoint_sha256,
                          frame_dim)
    audio_encoder_sha256  SHA-256 of the audio-encoder checkpoint file the bundle was made from
    decoding              {"beam_size", "max_len", "min_len", "length_norm", "rerank_weight"} defaults for inference
    sources               file names of the checkpoints it was made from
    reranker              (optional) the retrieval model that re-ranks the final beams by audio-text similarity,
                          all but its audio encoder, which must be the bundle's (``retrieval.rerank``)

A bundle of prefix-LM captioners holds their mapping networks and LoRA weights, not the LM: the LM folder each names
(an alias such as ``smollm2`` travels best) must be on the machine, and is checked by its fingerprint.

Captioners are checked against the audio encoder when a pipeline is assembled: the frame dimension must match, and
when a captioner records the encoder name and checkpoint hash of its training features, those must be this
encoder's; a mismatch is refused with a message naming both.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from captioning.decode import load_ensemble
from captioning.checkpoint import build_with_vocab
from captioning.search import Ensemble
from captioning.vocab import Vocabulary
from common import checkpoint_paths, load_checkpoint, load_state_dict_checked, save_checkpoint
from common.cli import run
from common.device import resolve_device
from features.encoders import AudioEncoder
from features.weights import (CHUNK_SECONDS, checkpoint_sha256, chunked_spec, encoder_from_state, load_audio_encoder,
                              weights_sha256)

KIND = "caption_bundle"
DECODING: dict[str, Any] = {"beam_size": 3, "max_len": 30, "min_len": 1, "length_norm": 0.0, "rerank_weight": 0.0}
ENCODER_PREFIX, CAPTIONER_PREFIX = "audio_encoder.", "captioners."
RUNTIMES = ("torch", "onnx")


@dataclass
class Pipeline:
    """What captioning raw audio needs; ``encoder`` is frozen and in eval mode, ``scorer`` holds the captioners."""

    encoder: AudioEncoder
    scorer: Ensemble
    vocab: Vocabulary
    encoder_sha256: str
    feature_attrs: dict[str, Any]
    decoding: dict[str, Any] = field(default_factory=lambda: dict(DECODING))
    reranker: Any = None  # retrieval.rerank.Reranker over this encoder's clip vectors, or None

    def to(self, device: str | torch.device) -> "Pipeline":
        """Every network (encoder, captioners, re-ranker) moved to ``device`` (:func:`common.device.resolve_device`);
        inputs follow the weights (``features.encode``, ``captioning.decode``)."""
        where = resolve_device(device)
        rerankers = [self.reranker.model] if self.reranker is not None else []
        for network in (self.encoder, *self.scorer.models, *rerankers):
            network.to(where)
        return self


def check_decoding(decoding: Mapping[str, Any]) -> dict[str, Any]:
    """Validate beam-search settings where they enter; returns them with their declared types."""
    out = {**DECODING, **{k: v for k, v in decoding.items() if v is not None}}
    unknown = set(out) - set(DECODING)
    if unknown:
        raise KeyError(f"unknown decoding setting(s) {sorted(unknown)} (valid: {sorted(DECODING)})")
    for key in ("beam_size", "max_len", "min_len"):
        if isinstance(out[key], bool) or not isinstance(out[key], int):
            raise ValueError(f"Invalid {key}. (expected an integer, found {out[key]!r})")
    if out["beam_size"] < 1 or out["max_len"] < 1 or not 0 <= out["min_len"] <= out["max_len"]:
        raise ValueError(f"Invalid decoding settings. (expected beam_size >= 1, max_len >= 1 and "
                         f"0 <= min_len <= max_len, found {out})")
    for key in ("length_norm", "rerank_weight"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)) or not 0 <= out[key] < float("inf"):
            raise ValueError(f"Invalid {key}. (expected a number >= 0, found {out[key]!r})")
        out[key] = float(out[key])
    return out


def check_compatible(captioner_args: Mapping[str, Any], feature_attrs: Mapping[str, Any], encoder: AudioEncoder,
                     encoder_sha256: str, captioner_source: str, encoder_source: str) -> None:
    """Refuse a captioner that was not trained on this encoder's features (ValueError naming both)."""
    name = encoder.spec["name"]
    if int(captioner_args["frame_dim"]) != int(encoder.frame_dim):
        raise ValueError(f"{captioner_source}: captioner reads {captioner_args['frame_dim']}-d frames, but audio "
                         f"encoder {encoder_source} ('{name}') writes {encoder.frame_dim}-d frames; use the encoder "
                         "its training features were extracted with")
    trained_name, trained_sha = feature_attrs.get("encoder"), feature_attrs.get("checkpoint_sha256")
    if (trained_name and trained_name != name) or (trained_sha and trained_sha != encoder_sha256):
        raise ValueError(f"{captioner_source}: captioner was trained on features of encoder '{trained_name}' "
                         f"(checkpoint sha256 {trained_sha or 'not recorded'}), but audio encoder {encoder_source} "
                         f"is '{name}' (checkpoint sha256 {encoder_sha256}); use the encoder its training "
                         "features were extracted with")


def load_pipeline(audio_encoder: str | Path, captioners: str | Sequence[str], *, encoder: str | None = None,
                  chunk_seconds: float | None = CHUNK_SECONDS, rerank: str | Path | None = None,
                  device: str | torch.device = "cpu") -> Pipeline:
    """Load an audio-encoder checkpoint (``audio_encoder.pt`` or official PANNs format; ``encoder`` names the
    architecture of an official one), windowing long audio every ``chunk_seconds`` (0/None: whole clips), and
    captioner checkpoints (comma-separated or a list: an ensemble); with ``rerank``, the retrieval checkpoint whose
    audio encoder this is, as the re-ranker of the final beams, with weight 1 unless the decoding says otherwise; the
    networks on ``device``."""
    where = resolve_device(device)  # a bad device is refused before any checkpoint is read
    paths = checkpoint_paths(captioners, "captioners")
    model = load_audio_encoder(audio_encoder, encoder, chunk_seconds=chunk_seconds).requires_grad_(False)
    sha = checkpoint_sha256(audio_encoder)
    scorer, vocab, attrs = load_ensemble(paths)
    for path, captioner in zip(paths, scorer.models):
        check_compatible(captioner.model_args, attrs, model, sha, str(path), str(audio_encoder))
    pipeline = Pipeline(model, scorer, vocab, sha, dict(attrs), reranker=_reranker(rerank, model, str(audio_encoder)))
    if rerank is not None:
        pipeline.decoding["rerank_weight"] = 1.0
    return pipeline.to(where)


def _reranker(rerank: str | Path | None, encoder: AudioEncoder, encoder_source: str) -> Any:
    """The retrieval checkpoint ``rerank`` as a re-ranker, refused unless ``encoder`` is its audio encoder."""
    if rerank is None:
        return None
    from retrieval.rerank import Reranker  # decoding that uses both stages: loaded only when asked for

    reranker = Reranker.load(rerank)
    reranker.check_encoder(weights_sha256(encoder.state_dict()), f"audio encoder {encoder_source}")
    return reranker


# ---- the bundle -----------------------------------------------------------------------------------------------
def bundle_checkpoint(pipeline: Pipeline, sources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline as one plain-data checkpoint (layout in the module docstring)."""
    spec = dict(pipeline.encoder.spec)
    if hasattr(pipeline.encoder, "rebuild_spec"):
        spec = pipeline.encoder.rebuild_spec(spec)  # e.g. AST from a local folder: its config, not the folder
    state = {ENCODER_PREFIX + k: v.detach().cpu() for k, v in pipeline.encoder.state_dict().items()}
    for i, captioner in enumerate(pipeline.scorer.models):
        state.update({f"{CAPTIONER_PREFIX}{i}.{k}": v.detach().cpu() for k, v in captioner.state_dict().items()})
    return {"kind": KIND,
            "model_args": {"audio_encoder": spec, "captioners": [dict(m.model_args) for m in pipeline.scorer.models]},
            "state_dict": state, "vocab": list(pipeline.vocab.words), "feature_attrs": dict(pipeline.feature_attrs),
            "audio_encoder_sha256": pipeline.encoder_sha256, "decoding": check_decoding(pipeline.decoding),
            "sources": dict(sources or {}),
            **({"reranker": pipeline.reranker.bundle_part()} if pipeline.reranker is not None else {})}


def load_bundle(path: str | Path, *, chunk_seconds: float | None = None, runtime: str = "torch",
                onnx_dir: str | Path | None = None, device: str | torch.device = "cpu") -> Pipeline:
    """Rebuild the pipeline a bundle holds, its networks on ``device``; ``chunk_seconds`` (if given; 0 = whole clips)
    replaces the window for long audio saved with the encoder. ``runtime="onnx"`` runs the networks with ONNX
    Runtime (on the CPU: ``device`` auto or cpu) from ``onnx_dir``, the folder ``python -m captioning.export`` made
    from this bundle (``captioning.onnx_runtime``)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"Invalid runtime. (expected one of {RUNTIMES}, found {runtime!r})")
    if (runtime == "onnx") != (onnx_dir is not None):
        raise ValueError("runtime 'onnx' needs onnx_dir (the folder captioning.export wrote), and only it does")
    if runtime == "onnx":
        if str(device) not in ("auto", "cpu"):
            raise ValueError(f"device {str(device)!r}: runtime 'onnx' runs on the CPU (ONNX Runtime's CPU build); "
                             "use runtime 'torch' for a GPU")
        from captioning.onnx_runtime import load_onnx_pipeline  # imports this module: loaded only when asked for

        return load_onnx_pipeline(path, onnx_dir, chunk_seconds=chunk_seconds)
    where = resolve_device(device)  # a bad device is refused before the bundle is read
    ckpt = load_checkpoint(path, kind=KIND)
    try:
        args, state = ckpt["model_args"], ckpt["state_dict"]
        enc_spec, cap_args = dict(args["audio_encoder"]), list(args["captioners"])
        words, attrs, sha = list(ckpt["vocab"]), dict(ckpt["feature_attrs"]), str(ckpt["audio_encoder_sha256"])
        decoding = check_decoding(ckpt["decoding"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a complete caption bundle (lacks {err})") from None
    if chunk_seconds is not None:
        enc_spec = chunked_spec(enc_spec, chunk_seconds)
    model = encoder_from_state(enc_spec, _under(state, ENCODER_PREFIX), f"{path} (audio encoder)")
    model = model.requires_grad_(False)
    models: list[nn.Module] = []
    for i, margs in enumerate(cap_args):
        captioner, vocab = build_with_vocab(margs, words)
        load_state_dict_checked(captioner, _under(state, f"{CAPTIONER_PREFIX}{i}."), f"{path} (captioner {i})")
        check_compatible(margs, attrs, model, sha, f"{path} (captioner {i})", f"{path} (audio encoder)")
        models.append(captioner.eval())
    return Pipeline(model, Ensemble(models), vocab, sha, attrs, decoding, bundle_reranker(ckpt, path, model)).to(where)


def open_pipeline(bundle: str | Path | None = None, *, audio_encoder: str | Path | None = None,
                  captioners: str | Sequence[str] | None = None, encoder: str | None = None,
                  rerank: str | Path | None = None, chunk_seconds: float | None = None, runtime: str = "torch",
                  onnx_dir: str | Path | None = None, device: str | torch.device = "cpu") -> Pipeline:
    """What ``captioning.infer`` and the API caption with: the ``bundle`` (:func:`load_bundle`), else the separate
    checkpoints (:func:`load_pipeline`); ``chunk_seconds`` None keeps the bundle's window for long audio, and gives
    separate checkpoints ``features.weights.CHUNK_SECONDS``."""
    if bundle is not None:
        return load_bundle(bundle, chunk_seconds=chunk_seconds, runtime=runtime, onnx_dir=onnx_dir, device=device)
    return load_pipeline(audio_encoder, captioners, encoder=encoder, rerank=rerank, device=device,
                         chunk_seconds=CHUNK_SECONDS if chunk_seconds is None else chunk_seconds)


def bundle_reranker(ckpt: Mapping[str, Any], path: str | Path, encoder: nn.Module | None = None) -> Any:
    """The re-ranker a bundle holds, around its audio encoder (``encoder``, else rebuilt from the bundle), or None;
    a bundle whose decoding re-ranks without one is refused."""
    if check_decoding(ckpt["decoding"])["rerank_weight"] and "reranker" not in ckpt:
        raise ValueError(f"{path}: its decoding re-ranks (rerank_weight {ckpt['decoding']['rerank_weight']}) but it "
                         "holds no re-ranker")
    if "reranker" not in ckpt:
        return None
    from retrieval.rerank import reranker_from_bundle  # decoding that uses both stages: loaded only when held

    if encoder is None:
        encoder = encoder_from_state(dict(ckpt["model_args"]["audio_encoder"]),
                                     _under(ckpt["state_dict"], ENCODER_PREFIX), f"{path} (audio encoder)")
    return reranker_from_bundle(ckpt["reranker"], encoder, f"{path} (re-ranker)")


def _under(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def make_bundle(audio_encoder: str, captioners: str | Sequence[str], out: str, encoder: str | None = None,
                chunk_seconds: float | None = CHUNK_SECONDS, beam_size: int = 3, max_len: int = 30, min_len: int = 1,
                length_norm: float = 0.0, rerank: str | None = None, rerank_weight: float = 0.0) -> Path:
    """Write one self-contained captioning checkpoint for ``python -m captioning.infer --bundle``.

    Args:
        audio_encoder: audio-encoder checkpoint (the ``audio_encoder.pt`` that ``retrieval.train`` writes beside
            ``best.pt``, not ``best.pt`` itself) or official PANNs checkpoint (then give ``encoder``, e.g. cnn14); it
            must be the encoder the captioners' training features were extracted with.
        captioners: one captioner checkpoint or several (comma-separated, sharing a vocabulary): an ensemble.
        out: the bundle file to write (atomically).
        encoder: architecture name for an official PANNs checkpoint.
        chunk_seconds: window for long audio saved with the encoder (0 = whole clips).
        beam_size: beams per clip (1 = greedy), saved as the bundle's default.
        max_len: most words per caption, saved as the bundle's default.
        min_len: fewest words per caption, saved as the bundle's default.
        length_norm: alpha of ``score / length ** alpha`` among finished beams, saved as the bundle's default.
        rerank: the retrieval checkpoint (``best.pt``) whose audio encoder is ``audio_encoder``: the bundle keeps it
            to re-rank the final beams by audio-text similarity (its text encoder makes the bundle larger).
        rerank_weight: weight of that similarity beside the normalised log-probability, saved as the bundle's
            default (``captioning.decode --rerank_weight auto`` chooses one on the validation split).
    Returns the bundle's path.
    """
    if rerank_weight and rerank is None:
        raise ValueError("--rerank_weight weighs re-ranking: give --rerank (a retrieval checkpoint) too")
    pipeline = load_pipeline(audio_encoder, captioners, encoder=encoder, chunk_seconds=chunk_seconds, rerank=rerank)
    pipeline.decoding = check_decoding({"beam_size": beam_size, "max_len": max_len, "min_len": min_len,
                                        "length_norm": length_norm, "rerank_weight": rerank_weight})
    sources = {"audio_encoder": Path(audio_encoder).name,
               "captioners": [Path(p).name for p in checkpoint_paths(captioners, "captioners")],
               **({"reranker": Path(rerank).name} if rerank else {})}
    save_checkpoint(bundle_checkpoint(pipeline, sources), out)
    return Path(out)


def main(audio_encoder: str, captioners: str, out: str, encoder: str | None = None,
         chunk_seconds: float | None = CHUNK_SECONDS, beam_size: int = 3, max_len: int = 30, min_len: int = 1,
         length_norm: float = 0.0, rerank: str | None = None, rerank_weight: float = 0.0) -> None:
    path = make_bundle(audio_encoder, captioners, out, encoder=encoder, chunk_seconds=chunk_seconds,
                       beam_size=beam_size, max_len=max_len, min_len=min_len, length_norm=length_norm,
                       rerank=rerank, rerank_weight=rerank_weight)
    print(f"{path}: caption bundle written ({path.stat().st_size / 2**20:.1f} MB)")


main.__doc__ = make_bundle.__doc__  # --help explains every argument

if __name__ == "__main__":
    run(main, "captioning.bundle")
