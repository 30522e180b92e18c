"""Train a captioner on frame features: cross-entropy (label smoothing, scheduled sampling), then optionally SCST.

    python -m captioning.train --config recipes/synth/conf/caption_xe.yaml [--train.epochs 5 ...]

Each epoch: train, decode the validation set with beam search and score CIDEr-D, fold the weights into the running
average of the last ``train.average_last`` epochs, save ``last.pt`` (everything needed to resume) and ``best.pt``
(best CIDEr-D). ``averaged.pt`` holds the averaged weights. Killed at any point, the same command resumes from
``last.pt`` and ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import fire
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from captioning.checkpoint import load_captioner, model_checkpoint
from captioning.data import CaptionPairs, Clips, collate, load_captions, open_checked_store
from captioning.decode import caption_clips, score_cider
from captioning.models import build_captioner
from captioning.search import Ensemble
from captioning.vocab import Vocabulary
from common import load_checkpoint, load_config, open_run, rng_state, save_checkpoint, seed_everything, set_rng_state
from common import dump_config, write_history

DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/captioning",
    "seed": 1,
    "data": {
        "train_features": "", "train_captions": "",  # HDF5 store; split folder or captions.json
        "val_features": "", "val_captions": "",
        "batch_size": 32, "num_workers": 0,
        "max_words": 30,  # longer training captions are cut
        "min_count": 1,  # vocabulary: words seen fewer times become <unk>
    },
    "features": {"expect_encoder": None, "expect_checkpoint_sha256": None},  # refuse stores made otherwise
    "model": {"encoder": "bigru", "encoder_args": None, "decoder": "transformer", "decoder_args": None},
    "train": {
        "mode": "xe",  # xe | scst
        "init": None,  # checkpoint to start from (SCST starts from the averaged XE weights)
        "epochs": 25, "lr": 5e-4, "weight_decay": 1e-6,
        "warmup_epochs": 1.0, "lr_decay": 0.9,  # linear warm-up, then lr *= lr_decay per epoch (applied per step)
        "label_smoothing": 0.1, "clip_grad": 2.0,
        "tf_start": 1.0, "tf_end": 0.7,  # teacher forcing probability, linear over training (scheduled sampling)
        "average_last": 5,  # averaged.pt = mean of the last N epochs' weights
    },
    # baseline: greedy | mean (of the clip's other samples); dropout: sample with dropout active
    "scst": {"num_samples": 5, "max_len": 20, "baseline": "greedy", "dropout": False},
    "val": {"beam_size": 3, "max_len": 30, "batch_size": 64},
}
MODES = ("xe", "scst")


def train(config: str | None = None, overrides: dict[str, Any] | None = None,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns ``{"exp_dir", "epoch", "best_cider_d", "history"}``.

    ``stop_after_epochs`` ends this invocation after that many epochs (as if killed after the checkpoint): tests use
    it to check that resuming gives the same result as an uninterrupted run.
    """
    cfg = load_config(DEFAULTS, config, overrides)
    if cfg["train"]["mode"] not in MODES:
        raise ValueError(f"train.mode: unknown '{cfg['train']['mode']}' (valid: {', '.join(MODES)})")
    exp_dir = Path(cfg["exp_dir"])
    log = open_run(exp_dir, cfg, "captioning.train")
    seed_everything(cfg["seed"])

    # -- data: stores checked against the config, vocabulary from the training captions ------------------------
    d = cfg["data"]
    expect = {"encoder": cfg["features"]["expect_encoder"],
              "checkpoint_sha256": cfg["features"]["expect_checkpoint_sha256"]}
    train_caps, val_caps = load_captions(d["train_captions"]), load_captions(d["val_captions"])
    train_store = open_checked_store(d["train_features"], expect, need_ids=list(train_caps))
    val_store = open_checked_store(d["val_features"], expect, need_ids=list(val_caps))
    if val_store.attrs["frame_dim"] != train_store.attrs["frame_dim"]:
        raise ValueError(f"{d['val_features']}: frame_dim {val_store.attrs['frame_dim']} differs from the training "
                         f"store's {train_store.attrs['frame_dim']}")

    # -- model: fresh, or from train.init (SCST) with its vocabulary ---------------------------------------------
    if cfg["train"]["init"]:
        model, vocab, init = load_captioner(cfg["train"]["init"])
        model_args = init["model_args"]
    else:
        vocab = Vocabulary.build((c for caps in train_caps.values() for c in caps), d["min_count"])
        model_args = {"encoder": cfg["model"]["encoder"], "encoder_args": cfg["model"]["encoder_args"] or {},
                      "decoder": cfg["model"]["decoder"], "decoder_args": cfg["model"]["decoder_args"] or {},
                      "frame_dim": int(train_store.attrs["frame_dim"]), "vocab_size": len(vocab)}
        model = build_captioner(model_args)
    model.train()
    # XE learns from every (clip, caption) pair; SCST samples per clip and is rewarded against all its captions
    dataset = (CaptionPairs(train_store, train_caps, vocab, d["max_words"]) if cfg["train"]["mode"] == "xe"
               else Clips(train_store, list(train_caps)))
    steps_per_epoch = math.ceil(len(dataset) / d["batch_size"])
    t = cfg["train"]
    total_steps = t["epochs"] * steps_per_epoch
    log.info("vocabulary %d words; %d training items; %d validation clips; %d parameters",
             len(vocab), len(dataset), len(val_caps), sum(p.numel() for p in model.parameters()))

    # -- optimizer, schedule (warm-up then exponential decay, per step), weight averaging --------------------------
    optimizer = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    warmup = max(1, round(t["warmup_epochs"] * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else t["lr_decay"] ** ((s - warmup) / steps_per_epoch))
    averaged = AveragedModel(model)
    reward = None
    if t["mode"] == "scst":  # CIDEr-D rewards against the training captions, statistics computed once
        from captioning.scst import scst_loss
        from eval.fast_cider import FastCiderD

        reward = FastCiderD(train_caps)
    first_averaged = t["epochs"] - t["average_last"] + 1  # 1-based epoch from which weights are averaged

    # -- resume from last.pt if this folder has one ----------------------------------------------------------------
    epoch, step, history, best = 0, 0, [], -1.0
    if (exp_dir / "last.pt").is_file():
        state = load_checkpoint(exp_dir / "last.pt", kind="captioner")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        averaged.load_state_dict(state["averaged"])
        epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best_cider_d"]
        set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d", exp_dir / "last.pt", epoch)

    runs = 0
    while epoch < t["epochs"] and (stop_after_epochs is None or runs < stop_after_epochs):
        epoch += 1
        runs += 1
        # -- train one epoch (shuffle order depends only on seed and epoch, so a resumed run sees the same) -----
        model.train()
        order = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
        loader = DataLoader(dataset, batch_size=d["batch_size"], shuffle=True, generator=order,
                            num_workers=d["num_workers"], collate_fn=collate)
        started, loss_sum, reward_sum, n_batches, tf_prob = time.time(), 0.0, 0.0, 0, 1.0
        for batch in loader:
            if t["mode"] == "xe":
                tf_prob = t["tf_start"] + (t["tf_end"] - t["tf_start"]) * min(1.0, step / max(1, total_steps - 1))
                tokens = batch["tokens"]  # (B, L): <bos> w1 .. wn <eos> <pad>..
                logits = model(batch["frames"], batch["frame_lengths"], tokens[:, :-1], tf_prob)["logits"]
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                       ignore_index=vocab.pad, label_smoothing=t["label_smoothing"])
            else:
                loss, mean_reward = scst_loss(model, batch, reward, vocab, cfg["scst"]["num_samples"],
                                              cfg["scst"]["max_len"], cfg["scst"]["baseline"],
                                              cfg["scst"]["dropout"])
                reward_sum += mean_reward
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip_grad"])
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1
        train_time = time.time() - started

        # -- validate: beam search on the validation clips, CIDEr-D -----------------------------------------------
        with torch.inference_mode():
            predictions = caption_clips(Ensemble([model]), val_store, vocab, list(val_caps),
                                        beam_size=cfg["val"]["beam_size"], max_len=cfg["val"]["max_len"],
                                        batch_size=cfg["val"]["batch_size"])
        cider = score_cider(predictions, val_caps)
        if epoch >= first_averaged:
            averaged.update_parameters(model)
        record = {"epoch": epoch, "loss": loss_sum / max(1, n_batches), "val_cider_d": cider,
                  "lr": scheduler.get_last_lr()[0], "tf_prob": tf_prob, "epoch_seconds": train_time}
        if t["mode"] == "scst":
            record["train_reward"] = reward_sum / max(1, n_batches)  # mean CIDEr-D of the sampled captions
        history.append(record)
        log.info("epoch %d: loss %.4f, val CIDEr-D %.4f, lr %.2e, teacher forcing %.2f, %.1fs%s", epoch,
                 record["loss"], cider, record["lr"], tf_prob, train_time,
                 f", train reward {record['train_reward']:.4f}" if "train_reward" in record else "")

        # -- checkpoint: best, last (resumable), averaged ---------------------------------------------------------
        meta = {"config": cfg, "epoch": epoch}
        if cider > best:
            best = cider
            save_checkpoint(model_checkpoint(model, model_args, vocab, train_store.attrs, val_cider_d=cider, **meta),
                            exp_dir / "best.pt")
        save_checkpoint(model_checkpoint(
            model, model_args, vocab, train_store.attrs, optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), averaged=averaged.state_dict(), rng=rng_state(), step=step,
            history=history, best_cider_d=best, **meta), exp_dir / "last.pt")
        if epoch >= first_averaged:
            save_checkpoint(model_checkpoint(averaged.module, model_args, vocab, train_store.attrs,
                                             averaged_epochs=epoch - first_averaged + 1, **meta),
                            exp_dir / "averaged.pt")
        write_history(exp_dir, history)

    return {"exp_dir": str(exp_dir), "epoch": epoch, "best_cider_d": best, "history": history}


def main(config: str | None = None, **overrides: Any) -> None:
    """Train a captioner: ``--config FILE`` then ``--section.key value`` overrides (see DEFAULTS in this file)."""
    result = train(config, overrides)
    print(f"{result['exp_dir']}: {result['epoch']} epochs, best val CIDEr-D {result['best_cider_d']:.4f}")


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__ + "\nSettings (defaults; override any with --section.key value):\n\n" + dump_config(DEFAULTS))
    else:
        fire.Fire(main)
