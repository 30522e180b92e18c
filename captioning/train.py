"""Train a captioner on frame features: cross-entropy (label smoothing, scheduled sampling), then optionally SCST.

    python -m captioning.train --config recipes/synth/conf/caption_transformer_xe.yaml [--train.epochs 5 ...]

Each epoch: train, decode the validation set with beam search and score CIDEr-D, fold the weights into the running
average of the last ``train.average_last`` epochs, save ``best.pt`` (best CIDEr-D), ``averaged.pt`` (the averaged
weights) and ``last.pt`` (everything needed to resume). Killed at any point, the same command resumes from
``last.pt`` and ends with the same weights as an uninterrupted run (:mod:`common.trainer`).

The features of one run agree: the validation store must come from the same encoder and checkpoint as the training
store, and a run started from ``train.init`` (SCST) must use stores of the encoder its captioner was trained on.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from captioning.checkpoint import FEATURE_KEYS, load_captioner, model_checkpoint
from captioning.data import CaptionPairs, Clips, collate, load_captions, open_checked_store
from captioning.decode import caption_clips, score_cider
from captioning.models import build_captioner
from captioning.search import Ensemble
from captioning.vocab import Vocabulary
from common.checkpoint import checkpoint_paths, seed_everything
from common.config import load_config
from common.run import open_run
from common.trainer import TRAIN_DEFAULTS, RunningMean, Trainer, check_train_settings, command_line
from features.store import FeatureStore

DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/captioning",
    "seed": 1,
    "data": {
        "train_features": "", "train_captions": "",  # HDF5 store; split folder or captions.json
        "val_features": "", "val_captions": "",
        "num_workers": 0,
        "max_words": 30,  # longer training captions are cut
        "min_count": 1,  # vocabulary: words seen fewer times become <unk>
        # more captions for the vocabulary (split folders or captions.json, comma-separated): pre-training on one
        # corpus names the corpus it will be fine-tuned on, whose words the fine-tuned model must be able to say
        "vocab_captions": None,
    },
    "features": {"expect_encoder": None, "expect_checkpoint_sha256": None},  # refuse stores made otherwise
    "model": {"encoder": "bigru", "encoder_args": None, "decoder": "transformer", "decoder_args": None},
    "train": {
        **TRAIN_DEFAULTS,
        "epochs": 25, "lr": 5e-4, "weight_decay": 1e-6,
        "schedule": "exponential", "warmup_epochs": 1.0, "lr_decay": 0.9,
        "grad_clip": 2.0, "average_last": 5,
        "mode": "xe",  # xe | scst
        "init": None,  # captioner checkpoint to start from (SCST starts from the averaged XE weights)
        "label_smoothing": 0.1,
        "tf_start": 1.0, "tf_end": 0.7,  # teacher forcing probability, linear over training (scheduled sampling)
    },
    # baseline: greedy | mean (of the clip's other samples); dropout: sample with dropout active
    "scst": {"num_samples": 5, "max_len": 20, "baseline": "greedy", "dropout": False},
    "val": {"beam_size": 3, "max_len": 30, "batch_size": 64},
}
MODES = ("xe", "scst")


def _check_same_features(reference: Mapping[str, Any], attrs: Mapping[str, Any], what: str, path: str) -> None:
    """Refuse features made by another encoder (or checkpoint, or of another dimension) than ``reference``."""
    diffs = [f"{k}: {reference[k]!r} vs {attrs.get(k)!r}" for k in FEATURE_KEYS
             if k in reference and attrs.get(k) != reference[k]]
    if diffs:
        raise ValueError(f"{path}: features made differently from {what} ({'; '.join(diffs)}); the stores of one "
                         "run, and the captioner it starts from, must come from the same audio encoder")


def load_caption_data(cfg: Mapping[str, Any]) -> tuple[dict, dict, FeatureStore, FeatureStore]:
    """(training captions, validation captions, training store, validation store) of a captioner config's ``data``
    and ``features`` sections; stores made otherwise than the config expects, or than each other, are refused."""
    d = cfg["data"]
    expect = {"encoder": cfg["features"]["expect_encoder"],
              "checkpoint_sha256": cfg["features"]["expect_checkpoint_sha256"]}
    train_caps, val_caps = load_captions(d["train_captions"]), load_captions(d["val_captions"])
    train_store = open_checked_store(d["train_features"], expect, need_ids=list(train_caps))
    val_store = open_checked_store(d["val_features"], expect, need_ids=list(val_caps))
    _check_same_features(train_store.attrs, val_store.attrs, f"the training store {d['train_features']}",
                         d["val_features"])
    return train_caps, val_caps, train_store, val_store


def train(config: str | None = None, overrides: dict[str, Any] | None = None, *,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns ``{"exp_dir", "epoch", "step", "best", "history"}`` (best: CIDEr-D).

    ``stop_after_epochs`` ends this call after that many epochs, as if killed after ``last.pt`` (tests).
    """
    cfg = load_config(DEFAULTS, config, overrides)
    t, d = cfg["train"], cfg["data"]
    if t["mode"] not in MODES:
        raise ValueError(f"train.mode: unknown '{t['mode']}' (valid: {', '.join(MODES)})")
    check_train_settings(t, config or "config", overrides)
    log = open_run(cfg["exp_dir"], cfg, "captioning.train")
    seed_everything(cfg["seed"])

    # -- data: stores checked against the config and each other, vocabulary from the training captions ----------
    train_caps, val_caps, train_store, val_store = load_caption_data(cfg)

    # -- model: fresh, or from train.init (SCST) with its vocabulary ---------------------------------------------
    if t["init"]:
        model, vocab, init = load_captioner(t["init"])
        model_args = init["model_args"]
        _check_same_features(init["feature_attrs"], train_store.attrs, f"those {t['init']} was trained on",
                             d["train_features"])
    else:
        extra = checkpoint_paths(d["vocab_captions"], "vocab_captions") if d["vocab_captions"] else []
        sources = [train_caps, *map(load_captions, extra)]
        vocab = Vocabulary.build((c for caps in sources for clip in caps.values() for c in clip), d["min_count"])
        model_args = {"encoder": cfg["model"]["encoder"], "encoder_args": cfg["model"]["encoder_args"] or {},
                      "decoder": cfg["model"]["decoder"], "decoder_args": cfg["model"]["decoder_args"] or {},
                      "frame_dim": int(train_store.attrs["frame_dim"]), "vocab_size": len(vocab)}
        model = build_captioner(model_args)
    model.train()
    # XE learns from every (clip, caption) pair; SCST samples per clip and is rewarded against all its captions
    dataset = (CaptionPairs(train_store, train_caps, vocab, d["max_words"]) if t["mode"] == "xe"
               else Clips(train_store, list(train_caps)))
    steps_per_epoch = math.ceil(len(dataset) / t["batch_size"])
    total_steps = t["epochs"] * steps_per_epoch
    log.info("vocabulary %d words; %d training items; %d validation clips; %d parameters",
             len(vocab), len(dataset), len(val_caps), sum(p.numel() for p in model.parameters()))
    reward = None
    if t["mode"] == "scst":  # CIDEr-D rewards against the training captions, statistics computed once
        from captioning.scst import scst_loss
        from eval.fast_cider import FastCiderD

        reward = FastCiderD(train_caps)

    # -- the skeleton: AdamW, warm-up then exponential decay per step, weight averaging, resume, checkpoints -----
    trainer = Trainer(cfg, model, model.parameters(), steps_per_epoch=steps_per_epoch, log=log,
                      name="captioning.train", stop_after_epochs=stop_after_epochs,
                      describe=lambda m: model_checkpoint(m, model_args, vocab, train_store.attrs))

    for epoch in trainer.epochs():
        # -- train one epoch (shuffle order depends only on seed and epoch, so a resumed run sees the same) -----
        model.train()
        order = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
        loader = DataLoader(dataset, batch_size=t["batch_size"], shuffle=True, generator=order,
                            num_workers=d["num_workers"], collate_fn=collate)
        losses, reward_sum, tf_prob = RunningMean(), 0.0, 1.0
        for batch in loader:
            batch = trainer.to_device(batch)
            if t["mode"] == "xe":
                progress = min(1.0, trainer.step_count / max(1, total_steps - 1))
                tf_prob = t["tf_start"] + (t["tf_end"] - t["tf_start"]) * progress
                tokens = batch["tokens"]  # (B, L): <bos> w1 .. wn <eos> <pad>..
                with trainer.autocast():
                    logits = model(batch["frames"], batch["frame_lengths"], tokens[:, :-1], tf_prob)["logits"]
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                       ignore_index=vocab.pad, label_smoothing=t["label_smoothing"])
            else:
                with trainer.autocast():
                    loss, mean_reward = scst_loss(model, batch, reward, vocab, cfg["scst"]["num_samples"],
                                                  cfg["scst"]["max_len"], cfg["scst"]["baseline"],
                                                  cfg["scst"]["dropout"])
                reward_sum += mean_reward
            trainer.step(loss)
            losses.add(loss)

        # -- validate: beam search on the validation clips, CIDEr-D -----------------------------------------------
        with torch.inference_mode():
            predictions = caption_clips(Ensemble([model]), val_store, vocab, list(val_caps),
                                        beam_size=cfg["val"]["beam_size"], max_len=cfg["val"]["max_len"],
                                        batch_size=cfg["val"]["batch_size"])
        record = {"loss": losses.mean(), "val_cider_d": score_cider(predictions, val_caps),
                  "lr": trainer.lr, "tf_prob": tf_prob}
        if t["mode"] == "scst":
            record["train_reward"] = reward_sum / max(1, losses.count)  # mean CIDEr-D of the sampled captions
        trainer.end_epoch(record, record["val_cider_d"])
    return trainer.finish()


if __name__ == "__main__":
    command_line(train, DEFAULTS, __doc__, "captioning.train")
