"""Train the audio-text bi-encoder with symmetric InfoNCE.

    python -m retrieval.train --config recipes/synth/conf/retrieval_cnn10.yaml [--key value ...]
    torchrun --nproc_per_node 2 -m retrieval.train --config ... (DDP, gloo on CPUs; negatives from all processes)

Settings are :data:`DEFAULTS`, then the YAML file, then ``--key value`` (nested keys with dots:
``--model.audio_encoder.width 0.5``). The experiment folder gets ``config.yaml``, ``train.log``,
``history.jsonl``, ``curves.png``, ``last.pt`` (every epoch, with optimizer, scheduler and RNG state) and ``best.pt``
(best validation text-to-audio mAP@10). Running the same command again after a kill resumes from ``last.pt`` and
ends with the same weights as an uninterrupted run: data order depends only on ``seed + epoch``, crops on
``(seed, epoch, index)``, and the RNG state of every process is restored.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import fire
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from common import load_checkpoint, open_run, rng_state, save_checkpoint, seed_everything, set_rng_state, write_history
from common.distributed import all_gather_object, barrier, init_distributed, is_main
from features.manifest import read_manifest
from common.checkpoint import load_state_dict_checked
from features.weights import load_audio_encoder
from retrieval.data import PairDataset, WaveformStore, collate_pairs
from retrieval.evaluate import evaluate_model
from retrieval.loss import info_nce
from retrieval.model import BiEncoder, build_model

DEFAULTS: dict[str, Any] = {
    "train_manifest": "",  # split folder (wav.csv + captions.json)
    "val_manifest": "",  # split folder for validation; "" = no validation (best.pt then follows the train loss)
    "exp_dir": "exp/retrieval",
    "model": {
        "audio_encoder": {"name": "cnn10", "width": 0.25, "sample_rate": 16000, "spec_augment": True,
                          "chunk_seconds": None, "hop_size": None, "dropout": None},  # None: the encoder's own default
        "text_encoder": {"name": "minilm", "pooling": "mean", "max_length": 32, "freeze_layers": 0,
                         "dropout": None},
        "embed_dim": 256,
        "init_temperature": 0.07,
        "min_temperature": 0.01,
    },
    "init_from": None,  # retrieval checkpoint to start from (e.g. pre-trained on another corpus)
    "audio_init": None,  # audio encoder weights to start from (official PANNs checkpoint or any features.weights format)
    "seed": 0,
    "epochs": 10,
    "batch_size": 32,  # global: split evenly over processes
    "lr": 1e-3,  # audio encoder, projections and temperature
    "text_lr": 2e-5,  # text encoder
    "weight_decay": 0.01,
    "warmup_steps": 50,
    "min_lr_ratio": 0.01,  # cosine decays to lr * min_lr_ratio at the last step
    "grad_clip": 1.0,  # max gradient norm; 0 = no clipping
    "caption_sampling": "all",  # "all": every (clip, caption) pair per epoch; "one": each clip once, random caption
    "crop_seconds": 10.0,  # random crop of longer training clips; evaluation uses whole clips
    "cache_audio": True,  # decode each clip once and keep it in memory (see retrieval.data)
    "num_threads": 0,  # torch intra-op threads per process; 0 = torch's default
    "sync_batchnorm": False,  # under DDP on GPUs, batch-norm statistics over the global batch (torch: GPU only)
    "eval_batch_size": 16,
    "log_interval": 20,  # steps between log lines
}


def _model_args(model_config: dict[str, Any]) -> dict[str, Any]:
    """The config's model section without unset (None) encoder options."""
    args = {k: v for k, v in model_config.items() if k not in ("audio_encoder", "text_encoder")}
    args["audio_encoder"] = {k: v for k, v in model_config["audio_encoder"].items() if v is not None}
    args["text_encoder"] = {k: v for k, v in model_config["text_encoder"].items() if v is not None}
    return args


def _scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` of the peak at ``total``."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    peak = [group["lr"] for group in optimizer.param_groups]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=min(peak) * min_ratio)
    if warmup <= 0:
        return cosine
    warm = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup])


def _param_groups(model: BiEncoder, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Text encoder at ``text_lr``, everything else at ``lr``; no weight decay on biases, norms and temperature."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_text = name.startswith("text_encoder.")
            decay = param.dim() >= 2
            groups.setdefault((is_text, decay), []).append(param)
    return [{"params": params, "lr": config["text_lr"] if is_text else config["lr"],
             "weight_decay": config["weight_decay"] if decay else 0.0}
            for (is_text, decay), params in sorted(groups.items())]


def sync_gradients(model: torch.nn.Module) -> None:
    """Average the gradients of every process (one coalesced all-reduce).

    DDP's own bucketed reducer is bypassed (the backward runs under ``no_sync``): measured with gloo on torch 2.x,
    its gradients disagree with a one-process run of the same global batch when the loss all-gathers embeddings
    (tests/retrieval/ddp_loss_check.py), while this explicit average agrees to float rounding.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _all_rng_states() -> list[dict[str, Any]]:
    """Every process's RNG state, rank order (tensors travel as numpy arrays: gathering tensors inside objects
    fails with gloo on CPU)."""
    state = rng_state()
    state["numpy"][1], state["torch"] = state["numpy"][1].numpy(), state["torch"].numpy()
    states = all_gather_object(state)
    for s in states:
        s["numpy"][1], s["torch"] = torch.from_numpy(s["numpy"][1]), torch.from_numpy(s["torch"])
    return states


def _init_weights_from(model: BiEncoder, path: str, log) -> None:
    """Start from another retrieval checkpoint's weights (strict: same architecture)."""
    checkpoint = load_checkpoint(path, kind="retrieval")
    load_state_dict_checked(model, checkpoint["state_dict"], f"{path} (init_from)", strict=True)
    log.info("initialised from %s (epoch %s)", path, checkpoint.get("epoch"))


def train(config: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Train (or resume) a retrieval model; returns the final history record of the main process."""
    cfg = load_config_checked(config, overrides)
    rank, world = init_distributed()
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    exp_dir = Path(cfg["exp_dir"])
    log = open_run(exp_dir, cfg, "retrieval.train", main_process=is_main())
    if cfg["batch_size"] % world:
        raise ValueError(f"batch_size {cfg['batch_size']} must be divisible by the number of processes ({world})")
    local_batch = cfg["batch_size"] // world

    # model: the same initial weights on every process (seeded), then per-process randomness (dropout, SpecAugment)
    model_args = _model_args(cfg["model"])
    seed_everything(cfg["seed"])
    model = build_model(model_args)
    if cfg["audio_init"]:
        audio_args = dict(model_args["audio_encoder"])
        pretrained = load_audio_encoder(cfg["audio_init"], audio_args.pop("name"), **audio_args)
        load_state_dict_checked(model.audio_encoder, pretrained.state_dict(), cfg["audio_init"], strict=True)
        log.info("audio encoder initialised from %s", cfg["audio_init"])
    if cfg["init_from"]:
        _init_weights_from(model, cfg["init_from"], log)
    seed_everything(cfg["seed"] + rank)

    # data: every (clip, caption) pair; the same global batches whatever the number of processes
    train_manifest = read_manifest(cfg["train_manifest"])
    store = WaveformStore(train_manifest, model.sample_rate, cache=cfg["cache_audio"])
    t0 = time.time()
    if cfg["cache_audio"]:
        log.info("decoded %d clips (%.1f MB at %d Hz) in %.1f s", len(train_manifest), store.preload() / 2**20,
                 model.sample_rate, time.time() - t0)
    dataset = PairDataset(train_manifest, store, cfg["crop_seconds"], seed=cfg["seed"],
                          caption_sampling=cfg["caption_sampling"])
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg["seed"])
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, collate_fn=collate_pairs, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{cfg['train_manifest']}: {len(dataset)} pairs make no batch of {local_batch} per process")
    val_manifest = read_manifest(cfg["val_manifest"]) if cfg["val_manifest"] else None
    val_store = WaveformStore(val_manifest, model.sample_rate) if val_manifest is not None and is_main() else None

    # optimizer and schedule (per step)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg))
    total_steps = cfg["epochs"] * len(loader)
    scheduler = _scheduler(optimizer, cfg["warmup_steps"], total_steps, cfg["min_lr_ratio"])

    # resume: last.pt holds everything needed to continue as if never stopped
    start_epoch, history, best = 1, [], -math.inf
    last_path, best_path = exp_dir / "last.pt", exp_dir / "best.pt"
    if last_path.is_file():
        ckpt = load_checkpoint(last_path, kind="retrieval")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"][rank])
        start_epoch, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]
        log.info("resumed from %s at epoch %d", last_path, ckpt["epoch"])

    raw_model = model
    if world > 1:
        if cfg["sync_batchnorm"]:
            if not torch.cuda.is_available():
                raise ValueError("sync_batchnorm: torch's SyncBatchNorm needs GPUs; set it false on CPUs "
                                 "(each process then normalises with its own batch's statistics)")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model)
    log.info("%d processes x %d pairs per batch, %d steps per epoch, %.2fM trainable parameters", world,
             local_batch, len(loader), sum(p.numel() for p in raw_model.parameters() if p.requires_grad) / 1e6)

    step = (start_epoch - 1) * len(loader)
    for epoch in range(start_epoch, cfg["epochs"] + 1):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        model.train()
        t0, loss_sum = time.time(), torch.zeros(2)
        for batch in loader:
            # forward: embed audio and captions, InfoNCE against the pairs of every process
            tokens = raw_model.text_encoder.tokenize(batch["captions"])
            out = model(batch["waveform"], batch["lengths"], tokens["input_ids"], tokens["attention_mask"])
            loss = info_nce(out["audio"], out["text"], batch["audio_ids"], out["temperature"])
            # backward, clip, step, schedule
            optimizer.zero_grad(set_to_none=True)
            with model.no_sync() if world > 1 else contextlib.nullcontext():
                loss.backward()
            sync_gradients(raw_model)
            if cfg["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["grad_clip"])
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += torch.tensor([loss.item(), 1.0])
            if step % cfg["log_interval"] == 0:
                log.info("epoch %d step %d loss %.4f temperature %.4f lr %.2e", epoch, step, loss.item(),
                         out["temperature"].item(), optimizer.param_groups[-1]["lr"])
        if world > 1:
            dist.all_reduce(loss_sum)  # mean over processes of their batch losses = mean global-batch loss
        record: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": (loss_sum[0] / loss_sum[1]).item(),
                                  "temperature": raw_model.temperature.item(), "epoch_seconds": time.time() - t0}

        # evaluate, then checkpoint (the main process writes; every process's RNG state is kept)
        if val_store is not None:
            metrics = evaluate_model(raw_model, val_manifest, val_store, batch_size=cfg["eval_batch_size"])
            record.update({f"val_{k}": v for k, v in metrics.items()})
        score = record["val_t2a_mAP10"] if "val_t2a_mAP10" in record else -record["train_loss"]
        history.append(record)
        rngs = _all_rng_states()
        if is_main():
            improved = score > best
            best = max(best, score)
            checkpoint = {"kind": "retrieval", "model_args": model_args, "state_dict": raw_model.state_dict(),
                          "config": cfg, "epoch": epoch, "step": step, "history": history, "best": best,
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs}
            if improved:
                save_checkpoint({k: checkpoint[k] for k in ("kind", "model_args", "state_dict", "config", "epoch",
                                                             "step", "history")}, best_path)
            save_checkpoint(checkpoint, last_path)
            write_history(exp_dir, history)
            log.info("epoch %d: %s%s", epoch, " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"),
                     " (best)" if improved else "")
        barrier()
    if dist.is_initialized():
        dist.destroy_process_group()
    return history[-1] if history else {}


def load_config_checked(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Resolve the config and check what a run needs before any work starts."""
    from common import load_config

    cfg = load_config(DEFAULTS, path, overrides)
    if not cfg["train_manifest"]:
        raise ValueError(f"{path or 'config'}: train_manifest is not set (a split folder with wav.csv)")
    if cfg["epochs"] < 1 or cfg["batch_size"] < 2:
        raise ValueError(f"{path or 'config'}: need epochs >= 1 and batch_size >= 2, found {cfg['epochs']}, "
                         f"{cfg['batch_size']}")
    return cfg


def main() -> None:
    """Command line: ``--help`` prints this module's description and every setting with its default."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        from common import dump_config

        print(__doc__ + "\nSettings (defaults):\n\n" + dump_config(DEFAULTS))
        return
    fire.Fire(train)


if __name__ == "__main__":
    main()
