"""Train a prefix-LM captioner on frame features: a mapping network into a causal LM, frozen (Pengi) or with LoRA
(the DCASE 2024 system), cross-entropy on the answer tokens only.

    python -m captioning.train_lm --config recipes/synth/conf/caption_lm_lora.yaml [--train.epochs 3 ...]

The LM comes from a local folder, a ``.gguf`` file or the alias ``smollm2`` (:mod:`captioning.lm`). Checkpoints hold
the mapping network and the LoRA weights only, with the LM's identity; ``captioning.decode`` and the other decoding
commands take them as they take the seq2seq captioners. Each epoch: train, decode the validation clips (beam search)
and score CIDEr-D; ``best.pt``, ``last.pt`` (resume) and the history as :mod:`common.trainer` writes them. Each
epoch sees every training clip once with one of its captions, drawn per clip and epoch from the seed.
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from captioning.checkpoint import model_checkpoint
from captioning.data import collate, load_captions, open_checked_store
from captioning.decode import caption_clips, score_cider
from captioning.models.prefix_lm import AUDIO_MARK, LORA_DEFAULTS, build_prefix_lm
from captioning.search import Ensemble
from captioning.train import _check_same_features
from common.checkpoint import seed_everything
from common.config import load_config
from common.run import open_run
from common.trainer import TRAIN_DEFAULTS, Trainer, check_train_settings, command_line
from features.store import FeatureStore

DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/prefix_lm",
    "seed": 1,
    "data": {"train_features": "", "train_captions": "", "val_features": "", "val_captions": "",
             "max_tokens": 40,  # longer answers are cut (then end with <eos>)
             "val_clips": 0},  # validate on the first N validation clips (0: all)
    "features": {"expect_encoder": None, "expect_checkpoint_sha256": None},
    "model": {"lm": "smollm2", "mapping": "mlp", "prefix_length": 1, "mapping_args": None,
              "prompt": "Describe the following audio clip " + AUDIO_MARK, "chat_template": True,
              "lora": dict(LORA_DEFAULTS)},  # lora.r: 0 freezes the LM (Pengi)
    "train": {**TRAIN_DEFAULTS, "epochs": 10, "batch_size": 16, "lr": 3e-4, "weight_decay": 0.0,
              "schedule": "cosine", "warmup_epochs": 1.0, "grad_clip": 1.0, "average_last": 0,
              "gradient_checkpointing": False},
    "val": {"beam_size": 3, "max_len": 30, "batch_size": 16},
}


class AnswerPairs(Dataset):
    """One (clip, caption) pair per clip: item i is ``{"audio_id", "frames" [T, D], "tokens"}`` with ``tokens`` the
    caption's LM tokens then ``<eos>``; which caption is set per epoch by :meth:`draw`."""

    def __init__(self, store: FeatureStore, captions: Mapping[str, list[str]], tokenizer: Any, eos: int,
                 max_tokens: int) -> None:
        self.store, self.captions, self.ids = store, captions, sorted(captions)
        self.encoded = {i: [tokenizer(c, add_special_tokens=False)["input_ids"][:max_tokens] + [eos]
                            for c in captions[i]] for i in self.ids}
        self.choice = [0] * len(self.ids)

    def draw(self, seed: int) -> None:
        rng = random.Random(seed)
        self.choice = [rng.randrange(len(self.encoded[i])) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> dict[str, Any]:
        audio_id = self.ids[k]
        return {"audio_id": audio_id, "frames": torch.from_numpy(self.store.frames(audio_id)).float(),
                "tokens": torch.tensor(self.encoded[audio_id][self.choice[k]], dtype=torch.long)}


def answer_loss(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens (``<eos>`` included), padding ignored."""
    targets = tokens.masked_fill(torch.arange(tokens.shape[1])[None] >= lengths[:, None], -100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def train(config: str | None = None, overrides: dict[str, Any] | None = None, *,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns ``{"exp_dir", "epoch", "step", "best", "history"}`` (best: CIDEr-D)."""
    cfg = load_config(DEFAULTS, config, overrides)
    t, d = cfg["train"], cfg["data"]
    check_train_settings(t, config or "config")
    log = open_run(cfg["exp_dir"], cfg, "captioning.train_lm")
    seed_everything(cfg["seed"])

    expect = {"encoder": cfg["features"]["expect_encoder"],
              "checkpoint_sha256": cfg["features"]["expect_checkpoint_sha256"]}
    train_caps, val_caps = load_captions(d["train_captions"]), load_captions(d["val_captions"])
    train_store = open_checked_store(d["train_features"], expect, need_ids=list(train_caps))
    val_store = open_checked_store(d["val_features"], expect, need_ids=list(val_caps))
    _check_same_features(train_store.attrs, val_store.attrs, f"the training store {d['train_features']}",
                         d["val_features"])

    model_args = {"family": "prefix_lm", **{k: v for k, v in cfg["model"].items() if v is not None},
                  "frame_dim": int(train_store.attrs["frame_dim"])}
    if not model_args["lora"].get("r"):
        del model_args["lora"]  # a frozen LM: the mapping network alone learns
    model, vocab = build_prefix_lm(model_args)
    model_args["lm_fingerprint"] = vocab.words[0][len("<lm:"):-1]
    prompt_length = len(model.before_ids) + model.mapping.prefix_length + len(model.after_ids())
    context = getattr(model.lm.config, "max_position_embeddings", None)
    if context and prompt_length + d["max_tokens"] + 1 > context:
        raise ValueError(f"model.prompt and data.max_tokens: the prompt ({prompt_length} positions with the audio "
                         f"prefix) and answers of up to {d['max_tokens']} tokens exceed the LM's context of "
                         f"{context}; shorten the prompt or lower data.max_tokens")
    if t["gradient_checkpointing"]:
        model.lm.gradient_checkpointing_enable()
    model.train()
    dataset = AnswerPairs(train_store, train_caps, model.tokenizer, model.eos, d["max_tokens"])
    steps_per_epoch = math.ceil(len(dataset) / t["batch_size"])
    trained = [p for p in model.parameters() if p.requires_grad]
    log.info("LM %s; %d trained parameters (of %d); %d training clips; %d validation clips", cfg["model"]["lm"],
             sum(p.numel() for p in trained), sum(p.numel() for p in model.parameters()), len(dataset),
             len(val_caps))
    trainer = Trainer(cfg, model, trained, steps_per_epoch=steps_per_epoch, log=log, name="captioning.train_lm",
                      stop_after_epochs=stop_after_epochs,
                      describe=lambda m: model_checkpoint(m, model_args, vocab, train_store.attrs))
    val_ids = sorted(val_caps)[:d["val_clips"] or None]

    for epoch in trainer.epochs():
        model.train()
        dataset.draw(cfg["seed"] * 1000 + epoch)
        order = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
        loader = DataLoader(dataset, batch_size=t["batch_size"], shuffle=True, generator=order,
                            collate_fn=lambda items: collate(items, pad=model.pad))
        loss_sum, n_batches = 0.0, 0
        for batch in loader:
            logits = model(batch["frames"], batch["frame_lengths"], batch["tokens"])["logits"]
            loss = answer_loss(logits, batch["tokens"], batch["token_lengths"])
            trainer.step(loss)
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1

        with torch.inference_mode():
            predictions = caption_clips(Ensemble([model]), val_store, vocab, val_ids, beam_size=cfg["val"]["beam_size"],
                                        max_len=cfg["val"]["max_len"], batch_size=cfg["val"]["batch_size"])
        record = {"loss": loss_sum / max(1, n_batches), "val_cider_d": score_cider(predictions, val_caps),
                  "lr": trainer.lr}
        trainer.end_epoch(record, record["val_cider_d"])
    return trainer.finish()


if __name__ == "__main__":
    command_line(train, DEFAULTS, __doc__, "captioning.train_lm")
