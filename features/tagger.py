"""Train an audio encoder as a PANNs-style tagger: binary cross-entropy on each clip's class labels.

    python -m features.tagger --config recipes/synth_claims/conf/tagger_cnn10.yaml [--key value ...]

The other way to make an audio encoder for captioning features, against which retrieval pre-training is measured:
the same encoder, the same cached waveforms and seeded random crops as ``retrieval.train``, the same training skeleton
(:mod:`common.trainer`), with a linear layer and a sigmoid per class on the clip embedding instead of the text side.
Split folders need ``labels.json`` (the synthetic corpus, MACS and the label-only corpora write it); the classes are
those of the training split. Validation scores macro mAP, the mean over classes of the average precision of the
clips ranked by that class's score (classes without a positive validation clip are left out).

The run folder gets what every trainer writes (``config.yaml``, ``train.log``, ``history.jsonl``, ``curves.png``,
``last.pt``, ``best.pt``) and ``audio_encoder.pt``, the best model's encoder alone, the file ``features.extract``
reads. A killed run resumes to the same weights, as every trainer does.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.checkpoint import seed_everything
from common.config import load_config
from common.run import open_run
from common.trainer import TRAIN_DEFAULTS, Trainer, check_train_settings, command_line
from features.encode import encode_waveforms, plan_batches
from features.encoders import build_audio_encoder, encoder_spec
from features.frontend import pad_waveforms
from features.manifest import Manifest, check_audio_files, read_manifest, read_manifests
from features.weights import save_audio_encoder
from retrieval.data import WaveformStore, random_crop
from retrieval.model import AUDIO_ENCODER_FILE

DEFAULTS: dict[str, Any] = {
    "exp_dir": "exp/tagger",
    "seed": 0,
    "data": {
        "train_manifest": "",  # split folder with wav.csv and labels.json; "a,b" trains on several together
        "val_manifest": "",  # split folder with labels.json; "" = no validation (best.pt follows the train loss)
        "crop_seconds": 10.0,  # random crop of longer training clips; validation uses whole clips
    },
    "model": {  # as retrieval.train's model.audio_encoder
        "audio_encoder": {"name": "cnn10", "width": 0.25, "sample_rate": 16000, "spec_augment": True,
                          "chunk_seconds": None, "hop_size": None, "dropout": None, "args": None},
    },
    "train": {**TRAIN_DEFAULTS, "warmup_epochs": 0.5, "log_interval": 20},
    "val": {"batch_size": 16},
}


class Tagger(nn.Module):
    """An audio encoder with one logit per class on its clip embedding."""

    def __init__(self, audio_encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        if hasattr(audio_encoder, "fc_audioset"):  # PANNs' own AudioSet head: unused, kept out of training
            audio_encoder.fc_audioset.requires_grad_(False)
        self.head = nn.Linear(int(audio_encoder.clip_dim), n_classes)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.audio_encoder(waveform, lengths)["clip"])  # (B, classes) logits


class LabelDataset(Dataset):
    """Labelled clips of a manifest; item = (waveform [n], multi-hot labels [classes]); crops as ``PairDataset``'s,
    drawn from ``(seed, epoch, index)``."""

    def __init__(self, manifest: Manifest, store: WaveformStore, classes: list[str], crop_seconds: float | None,
                 seed: int = 0) -> None:
        index = {c: k for k, c in enumerate(classes)}
        self.clips = [(i, [index[c] for c in manifest.labels[i] if c in index]) for i in manifest.ids
                      if manifest.labels.get(i)]
        self.store, self.n_classes = store, len(classes)
        self.crop = None if crop_seconds is None else int(round(crop_seconds * store.sample_rate))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def targets(self, i: int) -> Tensor:
        """Clip i's multi-hot labels [classes]."""
        return torch.zeros(self.n_classes).index_fill_(0, torch.tensor(self.clips[i][1], dtype=torch.long), 1.0)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return random_crop(self.store[self.clips[i][0]], self.crop, rng), self.targets(i)


def collate_labelled(items: list[tuple[np.ndarray, Tensor]]) -> dict[str, Tensor]:
    waves, targets = zip(*items)
    waveform, lengths = pad_waveforms(waves)
    return {"waveform": waveform, "lengths": lengths, "targets": torch.stack(targets)}


def macro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes (columns with at least one positive) of the average precision of rows ranked by score."""
    aps = []
    for k in range(targets.shape[1]):
        positive = targets[np.argsort(-scores[:, k], kind="stable"), k] > 0
        if positive.any():
            hits = np.cumsum(positive)
            aps.append(float(np.mean(hits[positive] / (np.flatnonzero(positive) + 1))))
    return float(np.mean(aps)) if aps else float("nan")


@torch.no_grad()
def validate(model: Tagger, dataset: LabelDataset, batch_size: int) -> dict[str, float]:
    """Macro mAP and mean BCE of whole clips (batched by length, so a clip's score does not depend on its batch)."""
    was_training = model.training
    model.eval()
    waves = [dataset.store[audio_id] for audio_id, _ in dataset.clips]
    targets = torch.stack([dataset.targets(i) for i in range(len(dataset))])
    logits = torch.empty(len(waves), dataset.n_classes)
    for rows in plan_batches([len(w) for w in waves], batch_size):
        clip = encode_waveforms(model.audio_encoder, [waves[i] for i in rows])["clip"]
        logits[rows] = model.head(clip.to(model.head.weight.device)).float().cpu()
    model.train(was_training)
    return {"mAP": macro_average_precision(torch.sigmoid(logits).numpy(), targets.numpy()),
            "loss": F.binary_cross_entropy_with_logits(logits, targets).item()}


def train(config: str | None = None, overrides: dict[str, Any] | None = None, *,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train (or resume) a tagger; returns ``{"exp_dir", "epoch", "step", "best", "history"}``.

    ``stop_after_epochs`` ends this call after that many epochs, as if killed after ``last.pt`` (tests).
    """
    cfg = load_config_checked(config, overrides or {})
    exp_dir = Path(cfg["exp_dir"])
    log = open_run(exp_dir, cfg, "features.tagger")
    d, t = cfg["data"], cfg["train"]
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

    seed_everything(cfg["seed"])
    spec = encoder_spec(cfg["model"]["audio_encoder"])
    model = Tagger(build_audio_encoder(spec.pop("name"), **spec), len(classes))
    store = WaveformStore(train_manifest, model.audio_encoder.sample_rate)
    store.preload()
    dataset = LabelDataset(train_manifest, store, classes, d["crop_seconds"], seed=cfg["seed"])
    generator = torch.Generator()
    loader = DataLoader(dataset, batch_size=t["batch_size"], shuffle=True, generator=generator,
                        collate_fn=collate_labelled, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{d['train_manifest']}: {len(dataset)} labelled clips make no batch of {t['batch_size']}")
    val_set = None if val_manifest is None else LabelDataset(
        val_manifest, WaveformStore(val_manifest, model.audio_encoder.sample_rate), classes, None)

    describe = lambda m: {"kind": "tagger", "classes": classes, "model_args": model.audio_encoder.spec,  # noqa: E731
                          "state_dict": m.state_dict()}
    trainer = Trainer(cfg, model, [p for p in model.parameters() if p.requires_grad], steps_per_epoch=len(loader),
                      log=log, name="features.tagger", stop_after_epochs=stop_after_epochs, describe=describe,
                      on_best=lambda: save_audio_encoder(model.audio_encoder, exp_dir / AUDIO_ENCODER_FILE))
    log.info("%d classes, %d labelled clips, %d steps per epoch", len(classes), len(dataset), len(loader))
    for epoch in trainer.epochs():
        generator.manual_seed(cfg["seed"] + epoch)  # the epoch's order depends on seed and epoch only
        dataset.set_epoch(epoch)
        model.train()
        losses = []
        for batch in loader:
            with trainer.autocast():
                logits = trainer.forward_model(*trainer.to_device([batch["waveform"], batch["lengths"]]))
            loss = F.binary_cross_entropy_with_logits(logits.float(), trainer.to_device(batch["targets"]))
            trainer.step(loss)
            losses.append(loss.item())
        record: dict[str, Any] = {"step": trainer.step_count, "train_loss": float(np.mean(losses))}
        if val_set is not None:
            record.update({f"val_{k}": v for k, v in validate(model, val_set, cfg["val"]["batch_size"]).items()})
        trainer.end_epoch(record, record["val_mAP"] if val_set is not None else -record["train_loss"])
    return trainer.finish()


def load_config_checked(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Resolve the config and check what a run needs before any work starts."""
    cfg = load_config(DEFAULTS, path, overrides)
    if not cfg["data"]["train_manifest"]:
        raise ValueError(f"{path or 'config'}: data.train_manifest is not set (a split folder with labels.json)")
    check_train_settings(cfg["train"], path or "config", overrides)
    return cfg


if __name__ == "__main__":
    command_line(train, DEFAULTS, __doc__, "features.tagger")
