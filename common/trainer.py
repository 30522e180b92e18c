"""The one training skeleton: everything around a trainer's own loop body.

A trainer (retrieval, captioner, prefix LM, ...) reads its data and builds its model, then hands both to
:class:`Trainer` and writes its loop top to bottom::

    trainer = Trainer(cfg, model, model.parameters(), steps_per_epoch=len(loader), describe=..., log=log)
    for epoch in trainer.epochs():
        for batch in loader:
            loss = ...                       # the stage's own forward pass
            trainer.step(loss)               # backward, gradient sync (DDP), clip, optimizer, schedule
        record = {...}                       # the stage's own validation
        trainer.end_epoch(record, score)     # weight averaging, history, best/averaged/last checkpoints
    return trainer.finish()

What the skeleton owns, so no trainer writes it again:

- **settings**: the ``train`` section (:data:`TRAIN_DEFAULTS`: epochs, batch_size, lr, weight_decay, schedule,
  warmup_epochs, min_lr_ratio, lr_decay, grad_clip, average_last, log_interval, device, precision) and
  top-level ``seed``/``exp_dir``;
- **the run folder**: ``config.yaml`` and ``command.sh`` are written when training starts (a start that fails
  before, e.g. on a bad model name, leaves no config that would refuse the corrected rerun); a folder made by a
  different configuration is refused;
- **AdamW and the per-step schedule** (linear warm-up, then cosine decay or exponential decay per epoch);
- **resume**: ``last.pt`` holds model, optimizer, schedule, averaged weights, every process's RNG state, epoch,
  step, history and best score; the same command after a kill continues as if never stopped, bit for bit;
- **outputs, in an order that makes a kill harmless**: each epoch writes ``best.pt`` (when the score improves) and
  the stage's ``on_best`` files, ``averaged.pt`` (mean weights of the last ``average_last`` epochs),
  ``history.jsonl`` and ``curves.png``, and only then ``last.pt``. ``last.pt`` is the epoch's commit: a run killed
  before it redoes the epoch (deterministically) and rewrites the same files; a run killed after it has every
  output of that epoch. A failure to draw ``curves.png`` is logged and does not stop training;
- **DDP**: with ``torchrun`` the model is wrapped in DistributedDataParallel, gradients are averaged over processes
  by one explicit all-reduce, and the main process writes every file;
- **device and mixed precision**: the model goes to ``train.device`` (a GPU when there is one); a loop moves its
  batches with :meth:`Trainer.to_device` and runs its forward pass under :meth:`Trainer.autocast` (bf16, or fp16
  with a gradient scaler whose state resumes with the rest). Checkpoints always load on the CPU.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from common.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from common.config import setting_source
from common.device import resolve_device
from common.distributed import all_rng_states, barrier, is_main, rank, sync_gradients, world_size
from common.io import remove_stale_temps
from common.run import commit_run, write_history

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,  # global: split evenly over processes
    "lr": 1e-3,  # peak learning rate
    "weight_decay": 0.01,
    "schedule": "cosine",  # cosine: to lr * min_lr_ratio at the last step; exponential: lr *= lr_decay per epoch
    "warmup_epochs": 0.0,  # linear warm-up over this many epochs (fractions allowed; counted in steps)
    "warmup_steps": 0,  # linear warm-up over this many optimizer steps instead, when > 0
    "min_lr_ratio": 0.01,  # the floor, as a fraction of the smallest peak lr (cosine; exponential with lr_decay null)
    "lr_decay": 0.9,  # exponential: factor per epoch after warm-up (applied per step); null: to the floor at the end
    "grad_clip": 1.0,  # max gradient norm; 0 = no clipping
    "average_last": 0,  # averaged.pt = mean weights of the last N epochs; 0 = no averaged.pt
    "log_interval": 50,  # optimizer steps between progress lines in the log
    "device": "auto",  # auto: this process's GPU when there is one (torchrun: LOCAL_RANK), else cpu; cpu, cuda, cuda:N
    "precision": "auto",  # auto: bf16 autocast where the hardware computes bf16 natively (a GPU that has it, a CPU
    # with AMX), else fp32; fp32, bf16, fp16 (GPU, loss-scaled)
}
SCHEDULES = ("cosine", "exponential")
PRECISIONS = ("fp32", "bf16", "fp16")
CHECKPOINTS = ("last.pt", "best.pt", "averaged.pt")


def check_train_settings(train: Mapping[str, Any], source: str, overrides: Mapping[str, Any] | None = None) -> None:
    """Refuse settings no run could use, before any work starts. A message names where the refused value came from:
    the command line when ``overrides`` (as given to ``load_config``) set it, else ``source`` (the config file)."""

    def where(key: str) -> str:
        return setting_source(f"train.{key}", overrides, source)

    if train["schedule"] not in SCHEDULES:
        raise ValueError(f"{where('schedule')}: train.schedule: unknown '{train['schedule']}' "
                         f"(valid: {', '.join(SCHEDULES)})")
    for key in ("epochs", "batch_size"):
        if train[key] < 1:
            raise ValueError(f"{where(key)}: need train.{key} >= 1, found {train[key]}")
    resolve_precision(train["precision"], resolve_device(train["device"], "train.device"))
    if train["lr"] <= 0:
        raise ValueError(f"{where('lr')}: need train.lr > 0, found {train['lr']}")
    for key in ("warmup_epochs", "warmup_steps", "grad_clip", "average_last"):
        if train[key] < 0:
            raise ValueError(f"{where(key)}: need train.{key} >= 0, found {train[key]}")
    if train["schedule"] == "exponential" and train["lr_decay"] is None and not 0 < train["min_lr_ratio"] <= 1:
        raise ValueError(f"{where('min_lr_ratio')}: train.lr_decay null decays to train.min_lr_ratio, which must be "
                         f"in (0, 1], found {train['min_lr_ratio']}")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively: a GPU that supports bf16, or a CPU with AMX tiles
    (there, bf16 autocast trains the main job's CNNs about twice as fast; benchmarks/bench_precision.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def resolve_precision(name: str, device: torch.device) -> str:
    """``train.precision`` for ``device``: ``auto`` is bf16 where the hardware has it natively, else fp32."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name not in PRECISIONS:
        raise ValueError(f"train.precision: unknown {name!r} (valid: auto, {', '.join(PRECISIONS)})")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("train.precision: fp16 needs a GPU (on the CPU, use bf16 or fp32)")
    return name


def build_scheduler(optimizer: torch.optim.Optimizer, train: Mapping[str, Any], steps_per_epoch: int):
    """The per-step learning-rate schedule of the ``train`` settings."""
    total = train["epochs"] * steps_per_epoch
    warmup = train["warmup_steps"] or round(train["warmup_epochs"] * steps_per_epoch)
    if train["schedule"] == "exponential":
        warmup = max(1, warmup)
        per_step = (train["lr_decay"] ** (1 / steps_per_epoch) if train["lr_decay"] is not None  # else: to the floor
                    else train["min_lr_ratio"] ** (1 / max(1, total - 1 - warmup)))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / warmup if s < warmup else per_step ** (s - warmup))
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    peak = [group["lr"] for group in optimizer.param_groups]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=min(peak) * train["min_lr_ratio"])
    if warmup <= 0:
        return cosine
    warm = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup])


class RunningMean:
    """The mean of a value logged every step (the loss), kept where the value is: reading a GPU tensor's value
    waits for the GPU, so a loop that read it every step would stall the queue of work once per step. Summed in
    float64 in step order, as a Python float sum of each step's value would be."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, value: torch.Tensor) -> None:
        value = value.detach().double()
        self.total = value if self.total is None else self.total + value
        self.count += 1

    def mean(self, all_processes: bool = False) -> float:
        """The mean so far (0 before any value); ``all_processes``: over every DDP process's values."""
        if self.total is None:
            return 0.0
        both = torch.stack([self.total, torch.tensor(float(self.count), dtype=torch.float64,
                                                      device=self.total.device)])
        if all_processes and world_size() > 1:
            torch.distributed.all_reduce(both)
        return float(both[0] / both[1])


class Trainer:
    """Optimizer, schedule, resume, checkpoints and history of one training run (see the module docstring).

    Args:
        cfg: the resolved config (``exp_dir``, ``seed``, ``train`` section with :data:`TRAIN_DEFAULTS` keys).
        model: the model being trained (not wrapped); its state goes into every checkpoint.
        params: parameters or AdamW parameter groups (groups may set their own ``lr`` and ``weight_decay``).
        steps_per_epoch: optimizer steps in one epoch (for the schedule).
        describe: ``describe(module) -> dict`` the stage's plain-data checkpoint of a module (``kind``,
            ``model_args``, ``state_dict`` and whatever its loader needs); training state is added to it here.
        log: the run's logger (:func:`common.run.open_run`).
        name: the command, for ``command.sh`` (``retrieval.train``).
        on_best: called (main process) when the score improves, to write the stage's own files of the best model.
        stop_after_epochs: end this call after that many epochs, as if killed after ``last.pt`` (tests).
    """

    def __init__(self, cfg: Mapping[str, Any], model: nn.Module, params: Iterable[Any], *, steps_per_epoch: int,
                 describe: Callable[[nn.Module], dict[str, Any]], log, name: str,
                 on_best: Callable[[], None] | None = None, stop_after_epochs: int | None = None) -> None:
        self.cfg, self.train_cfg = cfg, cfg["train"]
        self.exp_dir = Path(cfg["exp_dir"])
        self.model, self.describe, self.log, self.on_best = model, describe, log, on_best
        self.steps_per_epoch, self.stop_after_epochs = steps_per_epoch, stop_after_epochs
        self.device = resolve_device(self.train_cfg["device"], "train.device")
        self.precision = resolve_precision(self.train_cfg["precision"], self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        model.to(self.device)  # in place: the parameters the stage handed over stay the same objects
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.optimizer = torch.optim.AdamW(params, lr=self.train_cfg["lr"],
                                           weight_decay=self.train_cfg["weight_decay"])
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg, steps_per_epoch)
        self.averaged = AveragedModel(model) if self.train_cfg["average_last"] else None
        self.epoch, self.step_count, self.history, self.best = 0, 0, [], -math.inf
        self.epoch_started = time.time()
        self._resume()
        if is_main():
            commit_run(self.exp_dir, cfg, name)
        # one process: the model itself; several: DDP, gradients averaged by sync_gradients
        if world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.forward_model = model
        log.info("training on %s, %s", self.device, self.precision)  # also in every history record

    def _resume(self) -> None:
        last = self.exp_dir / "last.pt"
        if is_main() and self.exp_dir.is_dir():
            for name in CHECKPOINTS:  # temporary files of a killed write
                remove_stale_temps(self.exp_dir, name)
        if not last.is_file():
            return
        state = load_checkpoint(last, kind=self.describe(self.model)["kind"])
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) != world_size():
            raise ValueError(f"{last}: saved by {len(rngs)} process(es), resumed with {world_size()}; "
                             "resume with the same number of processes")
        set_rng_state(rngs[rank()])
        self.epoch, self.step_count = state["epoch"], state["step"]
        self.history, self.best = state["history"], state["best"]
        self.log.info("resumed from %s at epoch %d", last, self.epoch)

    def epochs(self) -> Iterator[int]:
        """The epochs still to run (1-based), ending early after ``stop_after_epochs``."""
        runs = 0
        while self.epoch < self.train_cfg["epochs"]:
            if self.stop_after_epochs is not None and runs >= self.stop_after_epochs:
                return
            self.epoch, runs = self.epoch + 1, runs + 1
            self.epoch_started = time.time()
            yield self.epoch

    def to_device(self, batch: Any) -> Any:
        """``batch`` (tensors, possibly in dicts, lists and tuples) on the training device; other values as they are."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's mixed-precision context (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    @property
    def lr(self) -> float:
        """The current learning rate of the first parameter group."""
        return self.scheduler.get_last_lr()[0]

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss``: backward, gradient average over processes, clip, step, schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        ddp = self.forward_model is not self.model
        with self.forward_model.no_sync() if ddp else contextlib.nullcontext():
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        sync_gradients(self.model)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.train_cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg["grad_clip"])
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        self.scheduler.step()
        self.step_count += 1
        if self.step_count % self.train_cfg["log_interval"] == 0:
            self.log.info("epoch %d step %d loss %.4f lr %.2e", self.epoch, self.step_count, loss.item(),
                          self.optimizer.param_groups[-1]["lr"])

    def end_epoch(self, record: dict[str, Any], score: float) -> bool:
        """Fold the weights into the average, append ``record`` to the history and write this epoch's files;
        returns whether ``score`` (higher is better) is the best so far."""
        first_averaged = self.train_cfg["epochs"] - self.train_cfg["average_last"] + 1
        if self.averaged is not None and self.epoch >= first_averaged:
            self.averaged.update_parameters(self.model)
        record = {"epoch": self.epoch, **record, "epoch_seconds": time.time() - self.epoch_started,
                  "precision": self.precision}  # what auto resolved to: tables differ between bf16 and fp32
        self.history.append(record)
        rngs = all_rng_states()
        improved = score > self.best
        self.best = max(self.best, score)
        if is_main():
            meta = {"config": dict(self.cfg), "epoch": self.epoch, "step": self.step_count}
            if improved:
                save_checkpoint({**self.describe(self.model), **meta, "history": self.history, "score": score},
                                self.exp_dir / "best.pt")
                if self.on_best is not None:
                    self.on_best()
            if self.averaged is not None and self.epoch >= first_averaged:
                save_checkpoint({**self.describe(self.averaged.module), **meta,
                                 "averaged_epochs": self.epoch - first_averaged + 1}, self.exp_dir / "averaged.pt")
            write_history(self.exp_dir, self.history, self.log)
            save_checkpoint({**self.describe(self.model), **meta, "history": self.history, "best": self.best,
                             "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                             "averaged": self.averaged.state_dict() if self.averaged is not None else None,
                             "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                             "rng": rngs}, self.exp_dir / "last.pt")  # last: this epoch's commit
            self.log.info("epoch %d: %s%s", self.epoch, " ".join(
                f"{k} {v:.4g}" for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))),
                " (best)" if improved else "")
        barrier()
        return improved

    def finish(self) -> dict[str, Any]:
        """Check the run's outputs are complete; returns ``{"exp_dir", "epoch", "step", "best", "history"}``."""
        if is_main() and self.epoch >= self.train_cfg["epochs"]:
            expected = ["last.pt", "best.pt", "history.jsonl"] + (["averaged.pt"] if self.averaged is not None else [])
            absent = [name for name in expected if not (self.exp_dir / name).is_file()]
            if absent:
                raise ValueError(f"{self.exp_dir}: training is finished but {', '.join(absent)} is missing "
                                 "(deleted by hand?); remove last.pt to train again")
        return {"exp_dir": str(self.exp_dir), "epoch": self.epoch, "step": self.step_count, "best": self.best,
                "history": self.history}


def command_line(train: Callable[..., dict[str, Any]], defaults: Mapping[str, Any], doc: str, name: str) -> None:
    """The command of a trainer: ``--help`` prints ``doc`` and every setting with its default; otherwise
    ``--config FILE --section.key value ...`` runs ``train(config, overrides)`` and prints where the run is."""
    if {"-h", "--help"} & set(sys.argv[1:]):
        from common.config import dump_config

        print(doc + "\nSettings (defaults; override any with --section.key value):\n\n" + dump_config(defaults))
        return
    from common.cli import run

    def main(config: str | None = None, **overrides: Any) -> None:
        result = train(config, overrides)
        if is_main():
            print(f"{result['exp_dir']}: {result['epoch']} epochs, best score {result['best']:.4f}")

    run(main, name)
