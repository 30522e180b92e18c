"""Pre-train an audio encoder as a PANNs-style tagger: binary cross-entropy on each clip's labels.

    python -m tagging.train --config recipes/synth/conf/pretrain_cnn10.yaml [--key value ...]

Stage 0 of the SJTU pipeline, in AudioSet's role: the encoder that retrieval training then refines. Two sources of
labelled audio (``data.source``):

- ``generated``: the synthetic corpus's scenes rendered on the fly (:class:`tagging.data.GeneratedScenes`), an
  endless stream from a seed apart from every recipe corpus, ``clips_per_epoch`` new clips an epoch, nothing on disk;
  tags are the generator's labels (:data:`tagging.data.TAGS`); validation is a held-out generated set of another
  seed. This is how the encoder shipped with the project was made (``tagging/pretrained/``).
- ``manifests``: prepared splits with ``labels.json`` (the synthetic corpus, MACS, label-only corpora); the classes
  are those of the training split. The claims recipe trains this way on the recipe's own clips.

Validation scores macro mAP, the mean over classes of the average precision of the clips ranked by that class's score
(classes without a positive validation clip are left out). The run folder gets what every trainer writes
(``config.yaml``, ``train.log``, ``history.jsonl``, ``curves.png``, ``last.pt``, ``best.pt``) and ``audio_encoder.pt``,
the best model's encoder alone, the file ``features.extract`` reads and ``retrieval.train`` starts from
(``--train.audio_init``). A killed run resumes to the same weights, as every trainer does.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common.checkpoint import seed_everything
from common.config import load_config
from common.run import open_run
from common.trainer import TRAIN_DEFAULTS, RunningMean, Trainer, check_train_settings, command_line
from features.encoders import build_audio_encoder, encoder_spec
from features.manifest import check_audio_files, read_manifest, read_manifests
from features.waveforms import WaveformStore
from features.weights import AUDIO_ENCODER_FILE, save_audio_encoder
from tagging.data import TAGS, GeneratedScenes, LabelDataset, collate_labelled, generated_clip, multi_hot
from tagging.model import Tagger, validate

SOURCES = ("generated", "manifests")
DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/tagger",
    "seed": 0,
    "data": {
        "source": "manifests",  # generated | manifests
        "train_manifest": "",  # manifests: split folder with wav.csv and labels.json; "a,b" trains on several
        "val_manifest": "",  # manifests: split with labels.json; "" = no validation (best.pt follows the train loss)
        "generated": {"seed": 2026, "clips_per_epoch": 4096, "val_seed": 2027, "val_clips": 512},
        "crop_seconds": 10.0,  # random crop of longer training clips; validation uses whole clips
        "num_workers": 0,  # processes generating or cropping batches
    },
    "model": {  # as retrieval.train's model.audio_encoder
        "audio_encoder": {"name": "cnn10", "width": 0.25, "sample_rate": 16000, "spec_augment": True,
                          "chunk_seconds": None, "hop_size": None, "dropout": None, "args": None},
    },
    "train": {**TRAIN_DEFAULTS, "warmup_epochs": 0.5, "log_interval": 20},
    "val": {"batch_size": 16},
}


def _data(cfg: dict[str, Any], sample_rate: int) -> tuple[Any, list[str], tuple[list, torch.Tensor] | None]:
    """(training dataset, classes, validation (whole waves, targets) or None) of the configured source."""
    d = cfg["data"]
    if d["source"] == "generated":
        g = d["generated"]
        dataset = GeneratedScenes(g["seed"], g["clips_per_epoch"], sample_rate, d["crop_seconds"])
        clips = [generated_clip(g["val_seed"], i, sample_rate) for i in range(g["val_clips"])]
        index = {tag: k for k, tag in enumerate(TAGS)}
        targets = torch.stack([multi_hot([index[t] for t in tags], len(TAGS)) for _, tags in clips])
        return dataset, list(TAGS), ([w for w, _ in clips], targets)
    train_manifest = read_manifests(d["train_manifest"], "data.train_manifest")
    val_manifest = read_manifest(d["val_manifest"]) if d["val_manifest"] else None
    classes = sorted({c for labels in train_manifest.labels.values() for c in labels})
    if not classes:
        raise ValueError(f"{d['train_manifest']}: no labelled clips (labels.json) to train a tagger on")
    for split, where in ((train_manifest, d["train_manifest"]), (val_manifest, d["val_manifest"])):
        if split is not None:
            check_audio_files(split, where)
    if val_manifest is not None and not val_manifest.labels:
        raise ValueError(f"{d['val_manifest']}: no labels.json to validate a tagger with")
    store = WaveformStore(train_manifest, sample_rate)
    store.preload()
    dataset = LabelDataset(train_manifest, store, classes, d["crop_seconds"], seed=cfg["seed"])
    if val_manifest is None:
        return dataset, classes, None
    val_set = LabelDataset(val_manifest, WaveformStore(val_manifest, sample_rate), classes, None)
    return dataset, classes, ([val_set.store[i] for i, _ in val_set.clips],
                              torch.stack([val_set.targets(i) for i in range(len(val_set))]))


def train(config: str | None = None, overrides: dict[str, Any] | None = None, *,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train (or resume) a tagger; returns ``{"exp_dir", "epoch", "step", "best", "history"}``.

    ``stop_after_epochs`` ends this call after that many epochs, as if killed after ``last.pt`` (tests).
    """
    cfg = load_config_checked(config, overrides or {})
    exp_dir = Path(cfg["exp_dir"])
    log = open_run(exp_dir, cfg, "tagging.train")
    t = cfg["train"]
    seed_everything(cfg["seed"])
    spec = encoder_spec(cfg["model"]["audio_encoder"])
    encoder = build_audio_encoder(spec.pop("name"), **spec)
    dataset, classes, val = _data(cfg, encoder.sample_rate)
    model = Tagger(encoder, len(classes))
    generator = torch.Generator()
    loader = DataLoader(dataset, batch_size=t["batch_size"], shuffle=True, generator=generator,
                        collate_fn=collate_labelled, drop_last=True, num_workers=cfg["data"]["num_workers"])
    if len(loader) == 0:
        raise ValueError(f"{cfg['data']['train_manifest']}: {len(dataset)} labelled clips make no batch of "
                         f"{t['batch_size']}")

    describe = lambda m: {"kind": "tagger", "classes": classes, "model_args": model.audio_encoder.spec,  # noqa: E731
                          "state_dict": m.state_dict()}
    trainer = Trainer(cfg, model, [p for p in model.parameters() if p.requires_grad], steps_per_epoch=len(loader),
                      log=log, name="tagging.train", stop_after_epochs=stop_after_epochs, describe=describe,
                      on_best=lambda: save_audio_encoder(model.audio_encoder, exp_dir / AUDIO_ENCODER_FILE))
    log.info("%s source: %d classes, %d clips an epoch, %d steps per epoch", cfg["data"]["source"], len(classes),
             len(dataset), len(loader))
    for epoch in trainer.epochs():
        generator.manual_seed(cfg["seed"] + epoch)  # the epoch's order depends on seed and epoch only
        dataset.set_epoch(epoch)
        model.train()
        losses = RunningMean()
        for batch in loader:
            with trainer.autocast():
                logits = trainer.forward_model(*trainer.to_device([batch["waveform"], batch["lengths"]]))
            loss = F.binary_cross_entropy_with_logits(logits.float(), trainer.to_device(batch["targets"]))
            trainer.step(loss)
            losses.add(loss)
        record: dict[str, Any] = {"step": trainer.step_count, "train_loss": losses.mean()}
        if val is not None:
            record.update({f"val_{k}": v for k, v in validate(model, *val, cfg["val"]["batch_size"]).items()})
        trainer.end_epoch(record, record["val_mAP"] if val is not None else -record["train_loss"])
    return trainer.finish()


def load_config_checked(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Resolve the config and check what a run needs before any work starts."""
    cfg = load_config(DEFAULTS, path, overrides)
    d = cfg["data"]
    if d["source"] not in SOURCES:
        raise ValueError(f"{path or 'config'}: data.source: unknown {d['source']!r} (valid: {', '.join(SOURCES)})")
    if d["source"] == "manifests" and not d["train_manifest"]:
        raise ValueError(f"{path or 'config'}: data.train_manifest is not set (a split folder with labels.json), "
                         "or use data.source generated")
    check_train_settings(cfg["train"], path or "config", overrides)
    return cfg


if __name__ == "__main__":
    command_line(train, DEFAULTS, __doc__, "tagging.train")
