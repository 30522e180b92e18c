"""aactk: every command of the toolkit under one name.

    aactk caption clips/ --bundle model/caption_bundle.pt --out predictions.json
    aactk train retrieval --config recipes/synth/conf/retrieval_cnn10.yaml
    aactk COMMAND --help        (what a command does, its options and their defaults)

Each command is the module it names (``aactk caption`` is ``python -m captioning.infer``), run with the same
arguments; ``python -m`` keeps working.
"""
from __future__ import annotations

import runpy
import sys
from typing import Sequence

# aactk name -> (module, what it does). Two words for the groups: train, eval.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("corpus.synth", "generate the built-in synthetic corpus (audio, captions, questions, labels)"),
    "prepare": ("corpus.prepare", "prepare Clotho, AudioCaps, ESC-50, ... or a folder as manifest splits"),
    "keywords": ("corpus.keywords", "caption a label-only corpus from its labels (CLAP's keyword-to-caption)"),
    "extract": ("features.extract", "write an audio encoder's frame features to HDF5 (resumable, sharded)"),
    "untrained": ("features.untrained", "an untrained audio encoder, for feature baselines"),
    "pretrained": ("tagging.pretrained", "list and check the pretrained encoders shipped with the toolkit"),
    "train tagger": ("tagging.train", "pre-train an audio tagger (PANNs-style), on generated scenes or a corpus"),
    "train retrieval": ("retrieval.train", "train an audio-text bi-encoder with symmetric InfoNCE"),
    "train captioner": ("captioning.train", "train a captioner on frame features (XE, then SCST)"),
    "train lm": ("captioning.train_lm", "train a prefix-LM captioner (LoRA on an LLM, or Pengi)"),
    "lm": ("common.lm", "make a language model ready offline (a GGUF file converted once)"),
    "merge-lora": ("captioning.merge_lora", "merge LoRA captioners by concatenating their modules"),
    "clap": ("retrieval.clap", "convert a LAION-CLAP checkpoint into a retrieval checkpoint"),
    "eval retrieval": ("retrieval.evaluate", "R@k and mAP@10 of retrieval models and ensembles"),
    "eval captions": ("eval.captions", "caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr, FENSE)"),
    "eval qa": ("eval.qa", "score answers to audio questions by type, beside the majority answer"),
    "eval classification": ("eval.classification", "top-k accuracy, recall per class, confusion matrix"),
    "eval compare": ("eval.compare", "paired bootstrap difference of two systems with its 95% interval"),
    "decode": ("captioning.decode", "caption a feature store with captioners (beam search, ensembles, re-ranking)"),
    "baseline": ("captioning.baseline", "the nearest-neighbour captioning baseline"),
    "answer": ("captioning.answer", "answer audio questions with a prefix-LM captioner"),
    "classify": ("captioning.classify", "classify clips by a prefix-LM captioner's prompt"),
    "zeroshot": ("retrieval.zeroshot", "zero-shot classification by retrieval (CLAP's prompt per label)"),
    "bundle": ("captioning.bundle", "pack an audio encoder and captioners into one file for inference"),
    "export": ("captioning.export", "export a bundle to ONNX"),
    "caption": ("captioning.infer", "caption audio files and folders with a bundle or checkpoints"),
    "search": ("retrieval.search", "search audio by text, captions by audio; DCASE retrieval submissions"),
    "index": ("retrieval.index", "build, update and search an index of an audio folder"),
    "serve": ("serve", "the web server and its page: caption, search, labels"),
}
GROUPS = sorted({name.split()[0] for name in COMMANDS if " " in name})


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [__doc__.strip(), "", "Commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command ``argv`` names (default: the process's arguments) as ``python -m`` would."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else 2)
    name = " ".join(args[:2]) if args[0] in GROUPS else args[0]
    if name not in COMMANDS:
        known = [n for n in COMMANDS if n.startswith(args[0] + " ")] or list(COMMANDS)
        print(f"aactk: unknown command {name!r}; one of: {', '.join(known)} (aactk --help)", file=sys.stderr)
        sys.exit(2)
    module = COMMANDS[name][0]
    sys.argv = [f"aactk {name}", *args[len(name.split()):]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
