"""A caption bundle run by ONNX Runtime: stand-ins for the audio encoder and the captioners, same contracts.

    pipeline = load_bundle("bundle.pt", runtime="onnx", onnx_dir="bundle_onnx")  # then caption_files(...) as usual
    python -m captioning.infer clips/ --bundle bundle.pt --runtime onnx --onnx-dir bundle_onnx

The folder comes from ``python -m captioning.export`` (its layout is in that module). :class:`OnnxAudioEncoder`
takes a padded batch with lengths like the torch encoder and windows long audio in Python as the torch encoder does
(every ``chunk_samples``, frames concatenated); :class:`OnnxCaptioner` honours the step-wise decoding contract
(``encode``, ``decoder.prepare``/``init_state``/``step``), so ``captioning.search`` decodes it unchanged. Tensors
cross into and out of ONNX Runtime as NumPy arrays; the beam search keeps working on torch tensors.

A folder is checked before use: its ``export.json`` must name this bundle's SHA-256, what it records that changes
results (the audio encoder's settings, each captioner's decoder) must be the bundle's, and every graph must be there
with the SHA-256 and inputs recorded at export; otherwise it is refused with a ValueError naming the file.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from captioning.bundle import KIND, Pipeline, bundle_reranker, check_decoding
from captioning.export import FORMAT, MANIFEST, VERSION
from captioning.search import Ensemble
from captioning.vocab import Vocabulary
from common import load_checkpoint
from features.encoders import build_audio_encoder
from features.encoders.panns import check_input
from features.weights import checkpoint_sha256, chunked_spec


def _run(session, feeds: dict[str, torch.Tensor], outputs: Sequence[str]) -> list[torch.Tensor]:
    """Run a graph on the feeds it declares (the exporter drops unused inputs); torch tensors in and out."""
    arrays = {i.name: np.ascontiguousarray(feeds[i.name].numpy()) for i in session.get_inputs()}
    return [torch.from_numpy(x) for x in session.run(list(outputs), arrays)]


class OnnxAudioEncoder(nn.Module):
    """The exported PANNs CNN as an audio encoder: ``(waveform [B, N], lengths [B])`` -> ``frames`` [B, T, D],
    ``frame_lengths`` [B], ``clip`` [B, D], equal to the torch encoder's (a clip alone or in any batch).

    Clips of one length run as one batch (the graphs take no lengths: their padding would leak into the frames).
    A module without parameters only so that code asking where an encoder runs gets the CPU.
    """

    def __init__(self, spec: dict[str, Any], backbone, head):
        super().__init__()
        with torch.device("meta"):  # a weightless twin: frame counts and window sizes, the torch encoder's own
            twin = build_audio_encoder(**spec)
        self.spec, self.backbone, self.head = dict(spec), backbone, head
        self.sample_rate, self.frame_dim, self.clip_dim = int(twin.sample_rate), twin.frame_dim, twin.clip_dim
        self.frame_hop, self.min_samples, self.chunk_samples = twin.frame_hop, twin.min_samples, twin.chunk_samples
        self.num_frames = twin.num_frames  # a bound method, so the twin is not registered as a submodule

    def _same_length(self, waves: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, n) clips of one length -> frames (b, T, D), clip (b, D)."""
        n = waves.shape[1]
        windows = [waves] if self.chunk_samples is None or n <= self.chunk_samples else \
            [waves[:, s:s + self.chunk_samples] for s in range(0, n, self.chunk_samples)]
        maps = []
        for w in windows:  # short windows are zero-padded to one output frame, as the torch encoder pads them
            w = np.pad(w, ((0, 0), (0, max(0, self.min_samples - w.shape[1]))))
            maps.append(self.backbone.run(["map"], {"waveform": np.ascontiguousarray(w)})[0])
        total = int(self.num_frames(torch.tensor([n]))[0])  # a last window too short for a frame adds none
        frames, clip = self.head.run(["frames", "clip"], {"map": np.concatenate(maps, axis=2)[:, :, :total]})
        return torch.from_numpy(frames), torch.from_numpy(clip)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        lengths = check_input(waveform, lengths)
        counts = [waveform.shape[1]] * len(waveform) if lengths is None else lengths.tolist()
        waves = waveform.detach().float().cpu().numpy()
        groups: dict[int, list[int]] = defaultdict(list)
        for i, n in enumerate(counts):
            groups[n].append(i)
        outs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for n, rows in groups.items():
            frames, clip = self._same_length(waves[rows, :n])
            outs.update({i: (frames[k], clip[k]) for k, i in enumerate(rows)})
        frame_lengths = torch.tensor([outs[i][0].shape[0] for i in range(len(counts))])
        frames = waveform.new_zeros(len(counts), int(frame_lengths.max()), self.frame_dim).float()
        for i, (f, _) in outs.items():
            frames[i, :len(f)] = f
        return {"frames": frames, "frame_lengths": frame_lengths,
                "clip": torch.stack([outs[i][1] for i in range(len(counts))])}


class OnnxDecoder:
    """``prepare`` / ``init_state`` / ``step`` over exported graphs (``prepare`` already ran inside ``encode``)."""

    def __init__(self, init, step, ctx_keys: list[str], state_keys: list[str]):
        self.init, self.step_graph, self.ctx_keys, self.state_keys = init, step, ctx_keys, state_keys

    def prepare(self, ctx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return ctx

    def init_state(self, ctx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = _run(self.init, {f"ctx.{k}": v for k, v in ctx.items()}, [f"state.{k}" for k in self.state_keys])
        return dict(zip(self.state_keys, out))

    def step(self, ctx: dict[str, torch.Tensor], state: dict[str, torch.Tensor], tokens: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feeds = {**{f"ctx.{k}": v for k, v in ctx.items()}, **{f"state.{k}": v for k, v in state.items()},
                 "tokens": tokens}
        logits, *out = _run(self.step_graph, feeds, ["logits", *[f"next.{k}" for k in self.state_keys]])
        return logits, dict(zip(self.state_keys, out))


class OnnxCaptioner:
    """A seq2seq captioner's exported graphs with the :class:`captioning.models.Captioner` decoding contract."""

    def __init__(self, encode, decoder: OnnxDecoder, model_args: dict[str, Any]):
        self.encode_graph, self.decoder, self.model_args = encode, decoder, model_args

    def encode(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        out = _run(self.encode_graph, {"frames": frames.float(), "frame_lengths": frame_lengths.long()},
                   [f"ctx.{k}" for k in self.decoder.ctx_keys])
        return dict(zip(self.decoder.ctx_keys, out))

    def eval(self) -> "OnnxCaptioner":
        return self


def _session(folder: Path, graph: Any, threads: int):
    """An ONNX Runtime session for a manifest entry, after checking the file is the one exported."""
    import onnxruntime as ort

    if not isinstance(graph, dict) or not {"file", "sha256", "inputs"} <= set(graph):
        raise ValueError(f"{folder / MANIFEST}: malformed graph entry {graph!r}")
    path = folder / str(graph["file"])
    if not path.is_file():
        raise ValueError(f"{path}: missing (listed in {MANIFEST}); export the bundle again")
    if checkpoint_sha256(path) != graph["sha256"]:
        raise ValueError(f"{path}: SHA-256 differs from the one recorded at export (corrupt or replaced); "
                         "export the bundle again")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own types; the file is what matters
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({' '.join(str(err).split())[:200]})") from None
    names = [i.name for i in session.get_inputs()]
    if names != list(graph["inputs"]):
        raise ValueError(f"{path}: inputs {names} differ from the recorded {graph['inputs']}")
    return session


def read_manifest(folder: Path, bundle: Path) -> dict[str, Any]:
    """The folder's ``export.json``, checked to belong to ``bundle`` (ValueError naming the file otherwise)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: missing; {folder} is not an ONNX export (make one with "
                         f"'python -m captioning.export --bundle {bundle} --out {folder}')")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path}: not an ONNX export manifest of format {FORMAT!r} version {VERSION}")
    sha = checkpoint_sha256(bundle)
    if manifest.get("bundle_sha256") != sha:
        raise ValueError(f"{path}: exported from another bundle ({manifest.get('bundle')!r}, SHA-256 "
                         f"{manifest.get('bundle_sha256')}), not from {bundle} (SHA-256 {sha}); export this one")
    return manifest


def load_onnx_pipeline(bundle: str | Path, onnx_dir: str | Path, *, chunk_seconds: float | None = None,
                       threads: int | None = None) -> Pipeline:
    """The bundle's pipeline with its networks run by ONNX Runtime (vocabulary and settings from the bundle).

    ``chunk_seconds`` (if given; 0 = whole clips) replaces the long-audio window saved with the encoder;
    ``threads``: ONNX Runtime's threads per graph (default: torch's thread count).
    """
    bundle, folder = Path(bundle), Path(onnx_dir)
    manifest = read_manifest(folder, bundle)
    ckpt = load_checkpoint(bundle, kind=KIND, mmap=True)  # its plain data only: ONNX Runtime holds the weights
    threads = int(threads or torch.get_num_threads())
    try:
        audio, captioners = manifest["audio_encoder"], list(manifest["captioners"])
        spec = dict(ckpt["model_args"]["audio_encoder"])  # the bundle's settings, never the folder's
        if audio["spec"] != spec:
            raise ValueError(f"{folder / MANIFEST}: its audio_encoder.spec {audio['spec']} differs from the "
                             f"bundle's {spec}: edited, or not made from this bundle; export the bundle again")
        if chunk_seconds is not None:
            spec = chunked_spec(spec, chunk_seconds)
        encoder = OnnxAudioEncoder(spec, _session(folder, audio["backbone"], threads),
                                   _session(folder, audio["head"], threads))
        models = []
        for i, (args, entry) in enumerate(zip(ckpt["model_args"]["captioners"], captioners)):
            if entry["decoder"] != args["decoder"]:
                raise ValueError(f"{folder / MANIFEST}: captioner {i}'s decoder {entry['decoder']!r} differs from "
                                 f"the bundle's {args['decoder']!r}; export the bundle again")
            graphs = entry["graphs"]
            decoder = OnnxDecoder(_session(folder, graphs["init"], threads), _session(folder, graphs["step"], threads),
                                  list(entry["ctx"]), list(entry["state"]))
            models.append(OnnxCaptioner(_session(folder, graphs["encode"], threads), decoder, dict(args)))
    except (KeyError, TypeError) as err:
        raise ValueError(f"{folder / MANIFEST}: incomplete (lacks {err})") from None
    if len(models) != len(ckpt["model_args"]["captioners"]):
        raise ValueError(f"{folder / MANIFEST}: holds {len(models)} captioner(s), the bundle "
                         f"{len(ckpt['model_args']['captioners'])}")
    return Pipeline(encoder, Ensemble(models), Vocabulary(list(ckpt["vocab"])), str(ckpt["audio_encoder_sha256"]),
                    dict(ckpt["feature_attrs"]), check_decoding(ckpt["decoding"]),
                    bundle_reranker(ckpt, bundle))  # its text side runs in torch
