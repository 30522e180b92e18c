"""Model folders from elsewhere (text encoders, language models, prompt and sentence encoders) are read as data and
never run.

A folder whose ``config.json`` (or tokenizer or processor config) has an ``auto_map`` asks ``transformers`` to import
Python files shipped in it: on a terminal it asks "Do you wish to run the custom code? [y/N]" and runs them on "y". A
sentence-transformers folder can name modules of its own in ``modules.json``. Checkpoints, bundles and indexes name
such folders and are shared between people, so every loader checks the folder first, on a terminal or not, and
passes ``trust_remote_code=False`` besides.

Weights in ``pytorch_model.bin`` are a pickle, which can name Python objects as well as tensors. ``transformers``
reads them with ``weights_only=True``, so such a file fails there, with torch's advice to load it with
``weights_only=False``; the check refuses it first, naming the file, and never repeats that advice.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

CONFIG_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # transformers reports an unreadable file itself, naming it


def _pickled_weights(folder: Path) -> list[Path]:
    """The pickled weight files ``transformers`` would read from ``folder``: ``pytorch_model.bin`` (or its shards),
    unless safetensors weights, which it prefers, are there."""
    if any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        return []
    return sorted(p for p in folder.glob("pytorch_model*.bin") if p.is_file())


def refuse_custom_code(folder: str | Path, what: str, weights: bool = True) -> None:
    """ValueError naming the file when the model folder ``folder`` (``what``: how the user named it) asks to run
    Python code of its own, or (``weights``: when its weights will be read) when its pickled weights hold Python
    objects or cannot be read; nothing is imported from it."""
    folder = Path(folder)
    for name in CONFIG_FILES:
        config = _read_json(folder / name)
        if isinstance(config, dict) and config.get("auto_map"):
            raise ValueError(f"{folder / name}: {what} asks to run Python code shipped in its folder (auto_map "
                             f"{json.dumps(config['auto_map'])[:200]}); refused: model folders are loaded as data "
                             "only. Use a folder of a model transformers knows (config.json without auto_map)")
    modules = _read_json(folder / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        kind = module.get("type", "") if isinstance(module, dict) else ""
        if kind and not kind.startswith("sentence_transformers."):
            raise ValueError(f"{folder / 'modules.json'}: {what} names a module of its own ({kind!r}), which would "
                             "run Python code shipped with it; refused: model folders are loaded as data only")
    for path in _pickled_weights(folder) if weights else []:
        from common.checkpoint import read_torch_file  # torch, only where there is a pickle to check

        # mapped, not read: only the pickle is checked here (a file older than torch 1.6 cannot be mapped)
        read_torch_file(path, what=f"weights file of {what}", mmap=zipfile.is_zipfile(path))
