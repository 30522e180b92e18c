"""Export a caption bundle to ONNX, for ONNX Runtime (``captioning.onnx_runtime``).

    python -m captioning.export --bundle model/caption_bundle.pt --out model/onnx

The folder holds one graph per piece the Python side calls, so the windowing of long audio and the beam search
(``captioning.search``) stay as they are:

    audio_backbone.onnx        waveform [B, N] -> last conv map [B, C, T] (log-mel front end included; one window)
    audio_head.onnx            map [B, C, T] -> frames [B, T, D], clip [B, D]
    captioner<i>_encode.onnx   frames, frame_lengths -> the decoder's context (``encode`` then ``decoder.prepare``)
    captioner<i>_init.onnx     context -> first decoder state (``decoder.init_state``)
    captioner<i>_step.onnx     context, state, tokens [N] -> logits [N, V], next state (``decoder.step``)
    export.json                what made the folder: the bundle's SHA-256, each graph's SHA-256 and I/O names

Graphs are traced by torch's TorchScript-based exporter (``dynamo=False``): it traces the packed bidirectional GRU
and the growing key/value caches with dynamic axes and needs no package beyond ``onnx``. Each graph is checked
against torch at other sizes than it was traced at before the folder is declared finished (``export.json`` is
written last); the exporter's note that ``prim::PackPadded`` lacks shape inference is harmless for that reason.
Exported: the PANNs CNNs (without CLAP's feature fusion or repeat padding) and the seq2seq captioners (GRU and
Transformer decoders); anything else is refused with the reason.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from captioning.bundle import load_bundle
from common.cli import run
from common.io import atomic_output
from features.encoders import PannsCnn
from features.weights import checkpoint_sha256

FORMAT, VERSION, MANIFEST = "aactk_onnx", 1, "export.json"
OPSET = 17
TOLERANCE = 1e-3  # a graph further than this from torch (at sizes it was not traced at) is a failed export


class _Call(nn.Module):
    """A function of tensors as a module, for the exporter (its parameters come from ``owner``)."""

    def __init__(self, owner: nn.Module, fn: Callable[..., Sequence[torch.Tensor]]):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.fn(*args))


def _dynamic_axes(names: Sequence[str], a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> dict:
    """Axes whose size differs between two sets of example tensors are dynamic (batch, frames, cache length)."""
    return {n: {d: f"{n}_{d}" for d in range(x.dim()) if x.shape[d] != y.shape[d]} for n, x, y in zip(names, a, b)}


def _export(path: Path, fn: Callable[..., Sequence[torch.Tensor]], owner: nn.Module, inputs: list[str],
            outputs: list[str], example: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Trace ``fn`` on ``example`` into ``path``; ``other`` (other sizes) marks the dynamic axes. Returns the
    graph's entry of the manifest (after checking ORT against torch on ``other``, which tracing did not see)."""
    module = _Call(owner, fn).eval()
    with torch.no_grad():
        out_a, out_b = module(*example), module(*other)
    axes = _dynamic_axes(inputs + outputs, [*example, *out_a], [*other, *out_b])
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and RNN batch-size notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example), str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: x.numpy() for n, x in zip(inputs, other)}
    got = session.run(outputs, {i.name: feeds[i.name] for i in session.get_inputs()})
    for name, x, y in zip(outputs, got, out_b):
        err = float(np.abs(x.astype(np.float64) - y.numpy().astype(np.float64)).max()) if x.size else 0.0
        if x.shape != tuple(y.shape) or err > TOLERANCE:
            raise ValueError(f"{path}: output {name!r} differs from torch (shape {x.shape} vs {tuple(y.shape)}, "
                             f"max difference {err:.2e}); the model uses an operation the exporter mistraces")
    return {"file": path.name, "sha256": checkpoint_sha256(path), "inputs": [i.name for i in session.get_inputs()],
            "outputs": outputs}


def check_exportable(pipeline) -> None:
    """Refuse what the ONNX runtime cannot stand in for (ValueError with the reason)."""
    encoder = pipeline.encoder
    name = encoder.spec.get("name")
    if not isinstance(encoder, PannsCnn):
        raise ValueError(f"audio encoder '{name}' is not exported: only the PANNs CNNs are (cnn6, cnn10, cnn14, "
                         "wavegram_logmel_cnn14)")
    if encoder.fusion_type or encoder.repeat_pad:
        raise ValueError(f"audio encoder '{name}' uses CLAP's feature fusion or repeat padding, which the ONNX "
                         "runtime does not reproduce; export an encoder without them")
    for i, model in enumerate(pipeline.scorer.models):
        args = getattr(model, "model_args", {})
        if args.get("family") == "prefix_lm":
            raise ValueError(f"captioner {i} is a prefix-LM captioner: its language model is not exported (only "
                             "seq2seq captioners with GRU or Transformer decoders are)")
        if args.get("decoder") not in ("gru", "transformer"):
            raise ValueError(f"captioner {i}: decoder {args.get('decoder')!r} is not exported (gru, transformer)")


def _export_audio(encoder: PannsCnn, out: Path) -> dict[str, Any]:
    rate = int(encoder.sample_rate)
    gen = torch.Generator().manual_seed(0)
    wave_a, wave_b = (0.1 * torch.randn(n, int(s * rate), generator=gen) for n, s in ((2, 3.0), (1, 4.3)))
    with torch.no_grad():
        map_a, map_b = encoder._backbone(wave_a, None)[0], encoder._backbone(wave_b, None)[0]
    backbone = _export(out / "audio_backbone.onnx", lambda w: [encoder._backbone(w, None)[0]], encoder,
                       ["waveform"], ["map"], [wave_a], [wave_b])

    def head(x: torch.Tensor) -> list[torch.Tensor]:
        result = encoder._head(x, None)
        return [result["frames"], result["clip"]]

    head_graph = _export(out / "audio_head.onnx", head, encoder, ["map"], ["frames", "clip"], [map_a], [map_b])
    return {"spec": dict(encoder.spec), "backbone": backbone, "head": head_graph}


def _export_captioner(model: nn.Module, index: int, frame_dim: int, out: Path) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(index)
    decoder = model.decoder
    examples = []
    for batch, frames in ((2, 12), (3, 7)):  # two sizes, so batch and frame axes are seen to vary
        x = torch.randn(batch, frames, frame_dim, generator=gen)
        lengths = torch.tensor([frames] + [max(1, frames - 3 * k) for k in range(1, batch)])
        examples.append((x, lengths))
    with torch.no_grad():
        ctxs = [decoder.prepare(model.encode(x, n)) for x, n in examples]
        states = [decoder.init_state(c) for c in ctxs]
        ctx_keys, state_keys = list(ctxs[0]), list(states[0])
        tokens = [torch.arange(1, 1 + c[ctx_keys[0]].shape[0]) for c in ctxs]
        grown = []  # states a few steps in (the Transformer's caches then have a length: 2 and 3)
        for c, s, t, n in zip(ctxs, states, tokens, (2, 3)):
            for _ in range(n):
                s = decoder.step(c, s, t)[1]
            grown.append(s)
    ctx_names, state_names = [f"ctx.{k}" for k in ctx_keys], [f"state.{k}" for k in state_keys]
    next_names = [f"next.{k}" for k in state_keys]

    def encode(frames: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        ctx = decoder.prepare(model.encode(frames, lengths))
        return [ctx[k] for k in ctx_keys]

    def init(*ctx: torch.Tensor) -> list[torch.Tensor]:
        state = decoder.init_state(dict(zip(ctx_keys, ctx)))
        return [state[k] for k in state_keys]

    def step(*args: torch.Tensor) -> list[torch.Tensor]:
        ctx = dict(zip(ctx_keys, args[:len(ctx_keys)]))
        state = dict(zip(state_keys, args[len(ctx_keys):-1]))
        logits, state = decoder.step(ctx, state, args[-1])
        return [logits, *[state[k] for k in state_keys]]

    def values(tree: dict, keys: list[str]) -> list[torch.Tensor]:
        return [tree[k] for k in keys]

    prefix = f"captioner{index}"
    graphs = {
        "encode": _export(out / f"{prefix}_encode.onnx", encode, model, ["frames", "frame_lengths"], ctx_names,
                          list(examples[0]), list(examples[1])),
        "init": _export(out / f"{prefix}_init.onnx", init, model, ctx_names, state_names,
                        values(ctxs[0], ctx_keys), values(ctxs[1], ctx_keys)),
        "step": _export(out / f"{prefix}_step.onnx", step, model, ctx_names + state_names + ["tokens"],
                        ["logits", *next_names], [*values(ctxs[0], ctx_keys), *values(grown[0], state_keys),
                                                  tokens[0]],
                        [*values(ctxs[1], ctx_keys), *values(grown[1], state_keys), tokens[1]]),
    }
    return {"decoder": model.model_args["decoder"], "ctx": ctx_keys, "state": state_keys, "graphs": graphs}


def export_bundle(bundle: str | Path, out: str | Path) -> Path:
    """Export the audio encoder and every captioner of a caption bundle to ONNX graphs in the folder ``out``.

    ``python -m captioning.export --bundle B.pt --out DIR``; then caption with ONNX Runtime:
    ``python -m captioning.infer CLIPS --bundle B.pt --runtime onnx --onnx-dir DIR``. Exports PANNs CNN encoders
    and GRU / Transformer captioners (prefix-LM captioners are refused); ``DIR/export.json`` records the bundle's
    SHA-256 and each graph's, so a folder made from another bundle, or a changed graph, is refused when loaded.

    Args:
        bundle: a caption bundle made by ``python -m captioning.bundle``.
        out: the folder to write: new, empty, or an earlier export, which is replaced whole once the new one is
            finished (a kill or a full disk on the way leaves it as it was).
    Returns the path of the folder's ``export.json``, written last.
    """
    bundle, out = Path(bundle), Path(out)
    pipeline = load_bundle(bundle)
    check_exportable(pipeline)
    _check_target(out)
    threads = torch.get_num_threads()
    # the whole folder is written beside ``out`` and swapped in at the end: a kill or a full disk leaves an earlier
    # export as it was; the graphs hold the bundle's weights, about its size
    with atomic_output(out, need=bundle.stat().st_size) as tmp:
        tmp.mkdir()
        try:
            torch.set_num_threads(1)  # tracing small graphs: threads only add overhead
            audio = _export_audio(pipeline.encoder, tmp)
            captioners = [_export_captioner(m, i, int(pipeline.encoder.frame_dim), tmp)
                          for i, m in enumerate(pipeline.scorer.models)]
        finally:
            torch.set_num_threads(threads)
        manifest = {"format": FORMAT, "version": VERSION, "opset": OPSET, "torch": torch.__version__,
                    "bundle": bundle.name, "bundle_sha256": checkpoint_sha256(bundle), "audio_encoder": audio,
                    "captioners": captioners}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out / MANIFEST


def _check_target(out: Path) -> None:
    """``out`` is new, empty or an earlier export (it is replaced whole): never a folder of other files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a folder (expected a new folder, or an earlier export to replace)")
    others = sorted(p.name for p in out.iterdir() if p.name != MANIFEST and p.suffix != ".onnx") if out.is_dir() else []
    if others:
        raise ValueError(f"{out}: holds files that are not part of an ONNX export ({', '.join(others[:3])}); "
                         "the export replaces the whole folder, so give a new or empty folder")


def main(bundle: str, out: str) -> None:
    path = export_bundle(bundle, out)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in path.parent.glob("*.onnx"))
    print(f"{path.parent}: ONNX export of {bundle} ({len(manifest['captioners'])} captioner(s), "
          f"{size / 2**20:.1f} MB); run it with 'python -m captioning.infer CLIPS --bundle {bundle} "
          f"--runtime onnx --onnx-dir {path.parent}'")


main.__doc__ = export_bundle.__doc__  # --help explains every argument

if __name__ == "__main__":
    run(main, "captioning.export")
