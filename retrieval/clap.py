"""Published LAION-CLAP checkpoints as project retrieval checkpoints.

    python -m retrieval.clap 630k-audioset-best.pt --text_encoder roberta-base-dir --out exp/clap/best.pt

LAION's HTS-AT checkpoints (``630k-best.pt``, ``630k-audioset-best.pt``, ``630k-fusion-best.pt``,
``630k-audioset-fusion-best.pt``) and PANN-based ones (LAION-CLAP's ``PANN-14``; ``{"state_dict": ...}`` or a bare
state dict, keys possibly prefixed ``module.``) become a :class:`~retrieval.model.BiEncoder` with the ``htsat`` or
``cnn14`` audio encoder at 48 kHz (architecture and feature fusion read from the weights), the RoBERTa text encoder
pooled by its ``pooler_output``, MLP projections, CLAP's training-only transforms and its two temperatures
(``log_temperature = -logit_scale_a``, ``log_temperature_t = -logit_scale_t``). Every weight must fit, strictly.
The text encoder folder needs only RoBERTa's ``config.json`` and tokenizer files: its weights come from the CLAP
checkpoint.

The output is what ``retrieval.train`` writes: a retrieval checkpoint (kind ``retrieval``), and ``audio_encoder.pt``
beside it, so search, evaluation, feature extraction and captioning use it unchanged. Captions are cut at 77 tokens,
as CLAP's tokenizer does; clips of up to 10 s are repeat-padded as CLAP prepares them.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import re
from pathlib import Path
from typing import Any

from torch import Tensor

from common.checkpoint import load_state_dict_checked, read_torch_file, save_checkpoint
from common.cli import run
from features.encoders.htsat import HTSAT_SIZES
from features.weights import save_audio_encoder
from retrieval.model import AUDIO_ENCODER_FILE, BiEncoder, build_model, model_checkpoint

CLAP_EMBED_DIM, CLAP_MAX_TOKENS = 512, 77
# LAION's key prefixes -> the bi-encoder's (CLAP's MLPLayers keep their layers in ``.sequential``)
RENAMES = (("audio_branch.", "audio_encoder."), ("text_branch.", "text_encoder.model."),
           ("audio_projection.", "audio_proj."), ("text_projection.", "text_proj."),
           ("audio_transform.sequential.", "audio_transform."), ("text_transform.sequential.", "text_transform."))
# log(1 / temperature) -> log(temperature)
LOGIT_SCALES = {"logit_scale_a": "log_temperature", "logit_scale_t": "log_temperature_t"}
# buffers older transformers saved and newer ones no longer have
STALE_KEYS = ("text_branch.embeddings.position_ids",)
PATCH_KEY = "audio_branch.patch_embed.proj.weight"  # HTS-AT
PANNS_KEY = "audio_branch.conv_block1.conv1.weight"  # the PANNs CNNs
KEY_NAMES = ", ".join([f"{new}* = LAION's {old}*" for old, new in RENAMES]
                      + [f"{new} = -{old}" for old, new in LOGIT_SCALES.items()])


def read_clap_state(path: str | Path) -> dict[str, Tensor]:
    """A LAION-CLAP checkpoint's state dict, ``module.`` prefixes and stale buffers removed (read as data only)."""
    ckpt = read_torch_file(path, "LAION-CLAP checkpoint", numpy_scalars=True)  # its optimizer state holds some
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a LAION-CLAP checkpoint (expected a state dict of tensors, or a dict with "
                         "one under 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in STALE_KEYS}


def audio_args(state: dict[str, Tensor], path: str | Path) -> dict[str, Any]:
    """The audio encoder arguments a CLAP audio branch's weights describe: HTS-AT or a PANNs CNN."""
    if PANNS_KEY in state:
        return panns_args(state, path)
    if PATCH_KEY not in state:
        raise ValueError(f"{path}: not a LAION-CLAP checkpoint of HTS-AT or PANNs (neither {PATCH_KEY} nor "
                         f"{PANNS_KEY}; keys start {sorted({k.split('.')[0] for k in state})})")
    return htsat_args(state, path)


def panns_args(state: dict[str, Tensor], path: str | Path) -> dict[str, Any]:
    """The ``cnn14`` arguments of a PANN-based CLAP audio branch (LAION-CLAP's PANN-14, at 48 kHz with CLAP's
    log-mel)."""
    if "audio_branch.pre_conv0.weight" in state:
        raise ValueError(f"{path}: a Wavegram-Logmel CLAP audio branch (audio_branch.pre_conv0.*); only the log-mel "
                         "CNN14 converts")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"audio_branch\.conv_block(\d+)\.", k))}
    if len(blocks) != 6 or "audio_branch.conv_block1.conv2.weight" not in state:
        raise ValueError(f"{path}: a PANN-based CLAP audio branch of {len(blocks)} convolution blocks: only CNN14 "
                         "(LAION-CLAP's PANN-14) converts; its PANN-6 and PANN-10 branches do not run in CLAP")
    fusion_type = _fusion_type(state, "audio_branch.")
    args: dict[str, Any] = {"name": "cnn14", "sample_rate": 48000, "fusion_type": fusion_type}
    if fusion_type is None:  # CLAP repeats short clips to 10 s (fusion does it itself)
        args["repeat_pad"] = True
    width = state[PANNS_KEY].shape[0] / 64  # 64 channels in the first block at full width
    if width != 1:
        args["width"] = width
    head = state.get("audio_branch.fc_audioset.weight")
    if head is not None and head.shape[0] != 527:  # AudioSet's classes, the default
        args["classes_num"] = int(head.shape[0])
    return args


def htsat_args(state: dict[str, Tensor], path: str | Path) -> dict[str, Any]:
    """The ``htsat`` encoder arguments a CLAP audio branch's weights describe."""
    # the architecture: width from the patch embedding, blocks and heads per stage from the attention tables
    embed_dim = int(state[PATCH_KEY].shape[0])
    blocks = [m.groups() for k in state if (m := re.match(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.", k))]
    stages = sorted({int(i) for i, _ in blocks})
    depths = [len({j for i, j in blocks if int(i) == s}) for s in stages]
    try:
        num_heads = [int(state[f"audio_branch.layers.{s}.blocks.0.attn.relative_position_bias_table"].shape[1])
                     for s in stages]
    except KeyError as err:
        raise ValueError(f"{path}: HTS-AT audio branch without {err.args[0]}") from None
    size = next((name for name, preset in HTSAT_SIZES.items() if preset["embed_dim"] == embed_dim), "tiny")
    found = {"embed_dim": embed_dim, "depths": depths, "num_heads": num_heads}
    overrides = {k: v for k, v in found.items() if v != _as_list(HTSAT_SIZES[size][k])}  # none for published ones
    return {"name": "htsat", "size": size, "fusion_type": _fusion_type(state, "audio_branch.patch_embed."),
            **overrides}


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _fusion_type(state: dict[str, Tensor], prefix: str) -> str | None:
    """CLAP's 2-D feature fusion (its layers under ``prefix``): none without ``mel_conv2d``; AFF / iAFF by their
    attention modules, else DAF."""
    if not any(k.startswith(f"{prefix}mel_conv2d.") for k in state):
        return None
    fusion = [k for k in state if k.startswith(f"{prefix}fusion_model.")]
    if any(k.startswith(f"{prefix}fusion_model.local_att2.") for k in fusion):
        return "iaff_2d"
    return "aff_2d" if fusion else "daf_2d"


def clap_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """LAION's key layout -> the bi-encoder's; other keys are kept as they are, for the strict load to name."""
    out = {}
    for key, value in state.items():
        if key in LOGIT_SCALES:
            out[LOGIT_SCALES[key]] = -value
            continue
        old, new = next(((o, n) for o, n in RENAMES if key.startswith(o)), ("", ""))
        out[new + key[len(old):]] = value
    return out


def load_clap(path: str | Path, text_encoder: str) -> tuple[BiEncoder, dict[str, Any]]:
    """(bi-encoder in eval mode, its ``model_args``) of a LAION-CLAP checkpoint, with the RoBERTa tokenizer and
    config in the folder ``text_encoder``; every weight loaded strictly (errors name the file and the keys)."""
    state = read_clap_state(path)
    audio = audio_args(state, path)
    if "text_branch.pooler.dense.weight" not in state:
        raise ValueError(f"{path}: the text branch has no pooler (text_branch.pooler.*): only LAION-CLAP's "
                         "RoBERTa/BERT text branches convert")
    model_args = {"audio_encoder": audio,
                  "text_encoder": {"name": text_encoder, "pooling": "pooler", "max_length": CLAP_MAX_TOKENS},
                  "embed_dim": CLAP_EMBED_DIM, "projection": "mlp", "transforms": True}
    model = build_model(model_args, pretrained=False)  # every weight comes from the CLAP checkpoint
    try:
        load_state_dict_checked(model, clap_state_dict(state), str(path), strict=True)
    except ValueError as err:
        raise ValueError(f"{err} (keys as the bi-encoder names them: {KEY_NAMES})") from None
    return model.eval(), model_args


def convert(checkpoint: str, *, text_encoder: str, out: str) -> dict[str, Any]:
    """Convert a published LAION-CLAP checkpoint (HTS-AT or PANNs + RoBERTa) into a project retrieval checkpoint.

    Writes OUT, a retrieval checkpoint as retrieval.train's best.pt (for retrieval.search, retrieval.evaluate), and
    audio_encoder.pt beside it (for features.extract, captioning and bundles), both atomically. The audio branch
    (HTS-AT and its size, or CNN14) and its feature fusion are read from the weights; every weight must fit,
    strictly. Captions are cut at 77 tokens and clips of up to 10 s repeat-padded, as CLAP does.

    Args:
        checkpoint: a LAION-CLAP checkpoint: 630k-best.pt, 630k-audioset-best.pt, 630k-fusion-best.pt,
            630k-audioset-fusion-best.pt, or one trained with LAION-CLAP's PANN-14 audio branch.
        text_encoder: a folder with roberta-base's config.json and tokenizer files (weights not needed), made on a
            machine with network by AutoConfig.from_pretrained("roberta-base").save_pretrained(DIR) and
            AutoTokenizer.from_pretrained("roberta-base").save_pretrained(DIR). Recorded in the checkpoint as an
            absolute path, and read again whenever the checkpoint is loaded.
        out: the retrieval checkpoint to write, e.g. exp/clap/best.pt.
    Returns:
        {"checkpoint", "audio_encoder", "model_args"}.
    """
    out_path = Path(out)
    audio_path = out_path.with_name(AUDIO_ENCODER_FILE)
    if out_path.name == AUDIO_ENCODER_FILE:
        raise ValueError(f"Invalid out. ({out} would be overwritten by the audio encoder written beside it; "
                         "choose another file name)")
    folder = Path(text_encoder)
    name = str(folder.resolve()) if folder.is_dir() else text_encoder  # loadable from any working directory
    model, model_args = load_clap(checkpoint, name)
    save_audio_encoder(model.audio_encoder, audio_path)
    save_checkpoint(model_checkpoint(model, model_args), out_path)
    return {"checkpoint": str(out_path), "audio_encoder": str(audio_path), "model_args": model_args}


if __name__ == "__main__":
    run(convert, "retrieval.clap", text_args=("checkpoint", "text_encoder", "out"))
