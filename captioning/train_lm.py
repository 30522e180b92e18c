"""Train a prefix-LM captioner on frame features: a mapping network into a causal LM, frozen (Pengi) or with LoRA
(the DCASE 2024 system), cross-entropy on the answer tokens only.

    python -m captioning.train_lm --config recipes/synth/conf/caption_lm_lora.yaml [--train.epochs 3 ...]

The LM comes from a local folder, a ``.gguf`` file or the alias ``smollm2`` (:mod:`common.lm`). Checkpoints hold
the mapping network and the LoRA weights only, with the LM's identity; ``captioning.decode`` and the other decoding
commands take them as they take the seq2seq captioners. Each epoch: train, decode the validation clips (beam search)
and score CIDEr-D; ``best.pt``, ``last.pt`` (resume) and the history as :mod:`common.trainer` writes them. Each
epoch sees every training clip once with one of its captions, drawn per clip and epoch from the seed.

Tasks as text (Pengi): with ``data.train_qa`` (a ``qa.json``, e.g. the synthetic corpus's), every clip with questions
is also seen once per epoch with one of its questions (``model.qa_prompt``) and that answer; ``data.val_qa`` adds the
validation accuracy of closed-set answers (:mod:`captioning.answer`). Both prompts must put ``[audio]`` after the
same text (e.g. first), since that text is computed once for the whole batch.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import math
import random
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from captioning.answer import QA_PROMPT, answer_qa, candidate_answers
from captioning.checkpoint import model_checkpoint
from captioning.data import collate
from captioning.decode import caption_clips, score_cider
from captioning.models.prefix_lm import AUDIO_MARK, LORA_DEFAULTS, build_prefix_lm
from captioning.search import Ensemble
from captioning.train import load_caption_data
from common.checkpoint import load_checkpoint, seed_everything
from common.config import load_config
from common.run import open_run
from common.trainer import TRAIN_DEFAULTS, RunningMean, Trainer, check_train_settings, command_line
from eval.qa import read_qa, score_answers
from features.store import FeatureStore

DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/prefix_lm",
    "seed": 1,
    "data": {"train_features": "", "train_captions": "", "val_features": "", "val_captions": "",
             "train_qa": "", "val_qa": "",  # optional: question answering as a second task (qa.json or its folder)
             "max_tokens": 40,  # longer answers are cut (then end with <eos>)
             "val_clips": 0},  # validate on the first N validation clips (0: all)
    "features": {"expect_encoder": None, "expect_checkpoint_sha256": None},
    "model": {"lm": "smollm2", "mapping": "mlp", "prefix_length": 1, "mapping_args": None,
              "prompt": "Describe the following audio clip " + AUDIO_MARK, "chat_template": True,
              "system_prompt": None,  # the chat's system turn (None: the LM's default; SmolLM2 introduces itself)
              "qa_prompt": QA_PROMPT,  # questions: [audio] first, as the caption prompt (one shared text before it)
              "prompt_encoder": None,  # Pengi: a text encoder name (minilm) for the prompt's own prefix slots
              "lora": dict(LORA_DEFAULTS)},  # lora.r: 0 freezes the LM (Pengi)
    "train": {**TRAIN_DEFAULTS, "epochs": 10, "batch_size": 16, "lr": 3e-4, "weight_decay": 0.0,
              "schedule": "cosine", "warmup_epochs": 1.0, "grad_clip": 1.0, "average_last": 0,
              "gradient_checkpointing": False,
              "init": None,  # a prefix-LM checkpoint of the same model to start from (e.g. LoRA runs to merge)
              "freeze_mapping": False},  # train LoRA alone, on the init's mapping network (members of a merge)
    "val": {"beam_size": 3, "max_len": 30, "batch_size": 16},
}


class Examples(Dataset):
    """One example per (clip, task) each epoch: item k is ``{"audio_id", "frames" [T, D], "prompt", "tokens"}`` with
    ``tokens`` the answer's LM tokens then ``<eos>`` and ``prompt`` None for the model's own (captions); which of an
    example's options (a clip's captions, or its questions) is set per epoch by :meth:`draw`."""

    def __init__(self, store: FeatureStore, options: Mapping[str, list[tuple[str | None, str]]], tokenizer: Any,
                 eos: int, max_tokens: int) -> None:
        self.store = store
        self.examples = [(audio_id, [(prompt, tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
                                      + [eos]) for prompt, text in choices])
                         for audio_id, choices in options.items()]
        self.choice = [0] * len(self.examples)

    def draw(self, seed: int) -> None:
        rng = random.Random(seed)
        self.choice = [rng.randrange(len(choices)) for _, choices in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, k: int) -> dict[str, Any]:
        audio_id, choices = self.examples[k]
        prompt, tokens = choices[self.choice[k]]
        return {"audio_id": audio_id, "frames": torch.from_numpy(self.store.frames(audio_id)).float(),
                "prompt": prompt, "tokens": torch.tensor(tokens, dtype=torch.long)}


def task_options(captions: Mapping[str, list[str]], qa: Mapping[str, list[dict]] | None,
                 qa_prompt: str) -> list[dict[str, list[tuple[str | None, str]]]]:
    """The examples of each task: captions (the model's prompt), then questions (``qa_prompt`` with each)."""
    tasks = [{audio_id: [(None, c) for c in caps] for audio_id, caps in sorted(captions.items())}]
    if qa:
        tasks.append({audio_id: [(qa_prompt.format(question=q["question"]), q["answer"]) for q in qs]
                      for audio_id, qs in sorted(qa.items()) if qs})
    return tasks


def collate_examples(items: list[dict[str, Any]], pad: int) -> dict[str, Any]:
    batch = collate(items, pad=pad)
    prompts = [it["prompt"] for it in items]
    batch["prompts"] = None if all(p is None for p in prompts) else prompts
    return batch


def answer_loss(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens (``<eos>`` included), padding ignored."""
    targets = tokens.masked_fill(torch.arange(tokens.shape[1], device=tokens.device)[None] >= lengths[:, None], -100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


SAME_MODEL_KEYS = ("lm_fingerprint", "frame_dim", "mapping", "prefix_length", "mapping_args", "prompt_encoder",
                   "lora", "chat_template", "system_prompt")


def start_from(model: torch.nn.Module, model_args: Mapping[str, Any], path: str) -> None:
    """Load the trained weights of the prefix-LM checkpoint ``path`` into ``model``, refusing another model."""
    init = load_checkpoint(path, kind="captioner")
    differ = [k for k in SAME_MODEL_KEYS if init["model_args"].get(k) != model_args.get(k)]
    if differ:
        raise ValueError(f"train.init: {path} is another model ({', '.join(differ)} differ from this config's)")
    try:
        model.load_state_dict(init["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"train.init: {path}: {err}") from None


def train(config: str | None = None, overrides: dict[str, Any] | None = None, *,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns ``{"exp_dir", "epoch", "step", "best", "history"}`` (best: CIDEr-D)."""
    cfg = load_config(DEFAULTS, config, overrides)
    t, d = cfg["train"], cfg["data"]
    check_train_settings(t, config or "config", overrides)
    log = open_run(cfg["exp_dir"], cfg, "captioning.train_lm")
    seed_everything(cfg["seed"])

    train_caps, val_caps, train_store, val_store = load_caption_data(cfg)

    model_args = {"family": "prefix_lm", **{k: v for k, v in cfg["model"].items() if v is not None},
                  "frame_dim": int(train_store.attrs["frame_dim"])}
    if not model_args["lora"].get("r"):
        del model_args["lora"]  # a frozen LM: the mapping network alone learns
    model, vocab = build_prefix_lm(model_args)
    model_args["lm_fingerprint"] = vocab.fingerprint
    slots = model.mapping.prefix_length * (2 if cfg["model"]["prompt_encoder"] else 1)
    prompt_length = len(model.before_ids) + slots + len(model.after_ids())
    context = getattr(model.lm.config, "max_position_embeddings", None)
    if context and prompt_length + d["max_tokens"] + 1 > context:
        raise ValueError(f"model.prompt and data.max_tokens: the prompt ({prompt_length} positions with the audio "
                         f"prefix) and answers of up to {d['max_tokens']} tokens exceed the LM's context of "
                         f"{context}; shorten the prompt or lower data.max_tokens")
    if t["init"]:
        start_from(model, model_args, t["init"])
    if t["freeze_mapping"]:
        for name, p in model.named_parameters():
            if name.startswith(("mapping.", "prompt_encoder.mapping.")):
                p.requires_grad_(False)
    if t["gradient_checkpointing"]:
        model.lm.gradient_checkpointing_enable()
    model.train()
    train_qa = read_qa(d["train_qa"]) if d["train_qa"] else None
    val_qa = read_qa(d["val_qa"]) if d["val_qa"] else None
    if train_qa or val_qa:
        try:  # questions share the text before the audio with the caption prompt
            model.after_ids(cfg["model"]["qa_prompt"].format(question="?"))
        except (KeyError, ValueError) as err:
            raise ValueError(f"model.qa_prompt and model.prompt: {err}") from None
    dataset = ConcatDataset([Examples(train_store, options, model.tokenizer, model.eos, d["max_tokens"])
                             for options in task_options(train_caps, train_qa, cfg["model"]["qa_prompt"])])
    steps_per_epoch = math.ceil(len(dataset) / t["batch_size"])
    trained = [p for p in model.parameters() if p.requires_grad]
    log.info("LM %s; %d trained parameters (of %d); %d training examples; %d validation clips", cfg["model"]["lm"],
             sum(p.numel() for p in trained), sum(p.numel() for p in model.parameters()), len(dataset),
             len(val_caps))
    trainer = Trainer(cfg, model, trained, steps_per_epoch=steps_per_epoch, log=log, name="captioning.train_lm",
                      stop_after_epochs=stop_after_epochs,
                      describe=lambda m: model_checkpoint(m, model_args, vocab, train_store.attrs))
    val_ids = sorted(val_caps)[:d["val_clips"] or None]
    if val_qa:
        val_qa = {i: val_qa[i] for i in val_ids if i in val_qa}
        candidates = candidate_answers(train_qa or val_qa)

    for epoch in trainer.epochs():
        model.train()
        for task in dataset.datasets:
            task.draw(cfg["seed"] * 1000 + epoch)
        order = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
        loader = DataLoader(dataset, batch_size=t["batch_size"], shuffle=True, generator=order,
                            collate_fn=lambda items: collate_examples(items, model.pad))
        losses = RunningMean()
        for batch in loader:
            batch = trainer.to_device(batch)
            with trainer.autocast():
                logits = model(batch["frames"], batch["frame_lengths"], batch["tokens"], batch["prompts"])["logits"]
            loss = answer_loss(logits.float(), batch["tokens"], batch["token_lengths"])
            trainer.step(loss)
            losses.add(loss)

        with torch.inference_mode():
            predictions = caption_clips(Ensemble([model]), val_store, vocab, val_ids, beam_size=cfg["val"]["beam_size"],
                                        max_len=cfg["val"]["max_len"], batch_size=cfg["val"]["batch_size"])
            record = {"loss": losses.mean(), "val_cider_d": score_cider(predictions, val_caps),
                      "lr": trainer.lr, "step": trainer.step_count}  # learning curves by step
            if val_qa:  # closed-set answers, candidates from the training questions
                answers = answer_qa(model, val_store, val_qa, candidates, cfg["model"]["qa_prompt"],
                                    cfg["val"]["batch_size"])
                record["val_qa_accuracy"] = score_answers(answers, val_qa)["accuracy"]
        trainer.end_epoch(record, record["val_cider_d"])
    return trainer.finish()


if __name__ == "__main__":
    command_line(train, DEFAULTS, __doc__, "captioning.train_lm")
