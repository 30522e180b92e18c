"""Train the audio-text bi-encoder with symmetric InfoNCE.

    python -m retrieval.train --config recipes/synth/conf/retrieval_cnn10.yaml [--key value ...]
    torchrun --nproc_per_node 2 -m retrieval.train --config ... (DDP, gloo on CPUs; negatives from all processes)

Settings are :data:`DEFAULTS`, then the YAML file, then ``--key value`` (nested keys with dots:
``--model.audio_encoder.width 0.5``); the ``train`` section is the shared training vocabulary
(:mod:`common.trainer`) plus ``text_lr``, ``init`` and ``audio_init``. The experiment folder gets ``config.yaml``,
``train.log``, ``history.jsonl``, ``curves.png``, ``last.pt`` (every epoch, with optimizer, scheduler and RNG state),
``best.pt`` (best validation text-to-audio mAP@10) and ``audio_encoder.pt``, the best model's audio encoder alone:
the file feature extraction, inference and bundles read. Running the same command again after a kill resumes from
``last.pt`` and ends with the same weights as an uninterrupted run: data order depends only on ``seed + epoch``,
crops on ``(seed, epoch, index)``, and the RNG state of every process is restored.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from common.checkpoint import load_checkpoint, load_state_dict_checked, seed_everything
from common.config import load_config, setting_source
from common.distributed import init_distributed, is_main
from common.run import open_run
from common.device import resolve_device
from common.trainer import TRAIN_DEFAULTS, RunningMean, Trainer, check_train_settings, command_line
from features.encoders import encoder_spec
from features.manifest import check_audio_files, read_manifest, read_manifests
from features.waveforms import WaveformStore
from features.weights import load_audio_encoder, save_audio_encoder
from retrieval.data import PairDataset, collate_pairs
from retrieval.evaluate import evaluate_model
from retrieval.loss import info_nce
from retrieval.model import AUDIO_ENCODER_FILE, BiEncoder, build_model, model_checkpoint

DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/retrieval",
    "seed": 0,
    "data": {
        "train_manifest": "",  # split folder (wav.csv + captions.json); "a,b" trains on several together
        "val_manifest": "",  # split folder for validation; "" = no validation (best.pt then follows the train loss)
        "caption_sampling": "all",  # "all": every (clip, caption) pair per epoch; "one": each clip once, random caption
        "crop_seconds": 10.0,  # random crop of longer training clips; evaluation uses whole clips
        "cache_audio": True,  # decode each clip once and keep it in memory (see retrieval.data)
        "num_workers": 0,  # processes cropping batches (started each epoch, after its crops are set: any count agrees)
    },
    "model": {
        # None: the encoder's own default (or an argument it does not take: BEATs and AST have no width);
        # args: any further arguments of the encoder (e.g. BEATs' encoder_layers, AST's fstride)
        "audio_encoder": {"name": "cnn10", "width": 0.25, "sample_rate": 16000, "spec_augment": True,
                          "chunk_seconds": None, "hop_size": None, "dropout": None, "args": None},
        "text_encoder": {"name": "minilm", "pooling": "mean", "max_length": 32, "freeze_layers": 0,
                         "dropout": None, "cache_frozen": False},  # cache_frozen: see common.text_encoder
        "embed_dim": 256,
        "init_temperature": 0.07,
        "min_temperature": 0.01,
    },
    "train": {
        **TRAIN_DEFAULTS,
        "warmup_epochs": 0.5,
        "log_interval": 20,
        "text_lr": 2e-5,  # text encoder; train.lr is for the audio encoder, projections and temperature
        "init": None,  # retrieval checkpoint to start from (e.g. pre-trained on another corpus)
        "audio_init": None,  # audio encoder weights to start from (official PANNs or project audio_encoder.pt)
    },
    "val": {"batch_size": 16},
    "num_threads": 0,  # torch intra-op threads per process; 0 = torch's default
    "sync_batchnorm": False,  # under DDP on GPUs, batch-norm statistics over the global batch (torch: GPU only)
}


def _model_args(model_config: dict[str, Any]) -> dict[str, Any]:
    """The config's model section without unset (None) encoder options."""
    args = {k: v for k, v in model_config.items() if k not in ("audio_encoder", "text_encoder")}
    args["audio_encoder"] = encoder_spec(model_config["audio_encoder"])
    args["text_encoder"] = {k: v for k, v in model_config["text_encoder"].items() if v is not None}
    return args


def _param_groups(model: BiEncoder, train_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Text encoder at ``text_lr``, everything else at ``lr``; no weight decay on biases, norms and temperature."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_text = name.startswith("text_encoder.")
            decay = param.dim() >= 2
            groups.setdefault((is_text, decay), []).append(param)
    return [{"params": params, "lr": train_cfg["text_lr"] if is_text else train_cfg["lr"],
             "weight_decay": train_cfg["weight_decay"] if decay else 0.0}
            for (is_text, decay), params in sorted(groups.items())]


def _build(cfg: dict[str, Any], log) -> tuple[BiEncoder, dict[str, Any]]:
    """The bi-encoder of the config, with its starting weights (``train.audio_init``, ``train.init``)."""
    model_args = _model_args(cfg["model"])
    t = cfg["train"]
    model = build_model(model_args, pretrained=not t["init"])  # train.init overwrites every weight: skip reading them
    if t["audio_init"]:
        audio_args = dict(model_args["audio_encoder"])
        pretrained = load_audio_encoder(t["audio_init"], audio_args.pop("name"), **audio_args)
        load_state_dict_checked(model.audio_encoder, pretrained.state_dict(), t["audio_init"], strict=True)
        log.info("audio encoder initialised from %s", t["audio_init"])
    if t["init"]:
        checkpoint = load_checkpoint(t["init"], kind="retrieval")
        load_state_dict_checked(model, checkpoint["state_dict"], f"{t['init']} (train.init)", strict=True)
        log.info("initialised from %s (epoch %s)", t["init"], checkpoint.get("epoch"))
    return model, model_args


def train(config: str | None = None, overrides: dict[str, Any] | None = None, *,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train (or resume) a retrieval model; returns ``{"exp_dir", "epoch", "step", "best", "history"}``.

    ``stop_after_epochs`` ends this call after that many epochs, as if killed after ``last.pt`` (tests).
    """
    cfg = load_config_checked(config, overrides or {})
    rank, world = init_distributed()
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    exp_dir = Path(cfg["exp_dir"])
    log = open_run(exp_dir, cfg, "retrieval.train", main_process=is_main())
    d, t = cfg["data"], cfg["train"]
    if t["batch_size"] % world:
        raise ValueError(f"train.batch_size {t['batch_size']} must be divisible by the number of processes ({world})")
    local_batch = t["batch_size"] // world

    # model: the same initial weights on every process (seeded), then per-process randomness (dropout, SpecAugment)
    seed_everything(cfg["seed"])
    model, model_args = _build(cfg, log)
    seed_everything(cfg["seed"] + rank)

    # data: every (clip, caption) pair; the same global batches whatever the number of processes
    train_manifest = read_manifests(d["train_manifest"], "data.train_manifest")
    val_manifest = read_manifest(d["val_manifest"]) if d["val_manifest"] else None
    for split, where in ((train_manifest, d["train_manifest"]), (val_manifest, d["val_manifest"])):
        if split is not None:  # every process: a failure must stop them all before they wait on each other
            check_audio_files(split, where)
    store = WaveformStore(train_manifest, model.sample_rate, cache=d["cache_audio"])
    t0 = time.time()
    if d["cache_audio"]:
        log.info("decoded %d clips (%.1f MB at %d Hz) in %.1f s", len(train_manifest), store.preload() / 2**20,
                 model.sample_rate, time.time() - t0)
    dataset = PairDataset(train_manifest, store, d["crop_seconds"], seed=cfg["seed"],
                          caption_sampling=d["caption_sampling"])
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg["seed"])
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, collate_fn=collate_pairs, drop_last=True,
                        num_workers=d["num_workers"], pin_memory=resolve_device(t["device"]).type == "cuda")
    if len(loader) == 0:
        raise ValueError(f"{d['train_manifest']}: {len(dataset)} pairs make no batch of {local_batch} per process")
    val_store = WaveformStore(val_manifest, model.sample_rate) if val_manifest is not None and is_main() else None
    if cfg["sync_batchnorm"] and world > 1:
        if not torch.cuda.is_available():
            raise ValueError("sync_batchnorm: torch's SyncBatchNorm needs GPUs; set it false on CPUs "
                             "(each process then normalises with its own batch's statistics)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    # the skeleton: AdamW, warm-up + cosine per step, resume from last.pt, checkpoints, DDP
    trainer = Trainer(cfg, model, _param_groups(model, t), steps_per_epoch=len(loader), log=log,
                      name="retrieval.train", stop_after_epochs=stop_after_epochs,
                      describe=lambda m: model_checkpoint(m, model_args),
                      on_best=lambda: save_audio_encoder(model.audio_encoder, exp_dir / AUDIO_ENCODER_FILE))
    log.info("%d processes x %d pairs per batch, %d steps per epoch, %.2fM trainable parameters", world,
             local_batch, len(loader), sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)

    for epoch in trainer.epochs():
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        model.train()
        losses = RunningMean()
        for batch in loader:
            # embed audio and captions, InfoNCE against the pairs of every process
            tokens = trainer.to_device(model.text_encoder.tokenize(batch["captions"]))
            with trainer.autocast():
                out = trainer.forward_model(*trainer.to_device([batch["waveform"], batch["lengths"]]),
                                            tokens["input_ids"], tokens["attention_mask"])
            loss = info_nce(out["audio"].float(), out["text"].float(), batch["audio_ids"], out["temperature"])
            trainer.step(loss)
            losses.add(loss)
        # the mean over processes of their batch losses = the mean global-batch loss
        record: dict[str, Any] = {"step": trainer.step_count, "train_loss": losses.mean(all_processes=True),
                                  "temperature": model.temperature.item()}
        if val_store is not None:  # the main process evaluates
            metrics = evaluate_model(model, val_manifest, val_store, batch_size=cfg["val"]["batch_size"])
            record.update({f"val_{k}": v for k, v in metrics.items()})
        trainer.end_epoch(record, record["val_t2a_mAP10"] if "val_t2a_mAP10" in record else -record["train_loss"])
    result = trainer.finish()
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


def load_config_checked(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Resolve the config and check what a run needs before any work starts."""
    cfg = load_config(DEFAULTS, path, overrides)
    source = path or "config"
    if not cfg["data"]["train_manifest"]:
        raise ValueError(f"{source}: data.train_manifest is not set (a split folder with wav.csv)")
    check_train_settings(cfg["train"], source, overrides)
    if cfg["train"]["batch_size"] < 2:
        raise ValueError(f"{setting_source('train.batch_size', overrides, source)}: InfoNCE needs "
                         f"train.batch_size >= 2, found {cfg['train']['batch_size']}")
    return cfg


if __name__ == "__main__":
    command_line(train, DEFAULTS, __doc__, "retrieval.train")
