"""The training skeleton on a toy regression: resume bit for bit, a kill before ``last.pt`` redoes the epoch to the
same result, a failed start claims no folder, a failed plot does not stop training, schedules."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import common.run
import common.trainer
from common import load_checkpoint, open_run, seed_everything
from common.device import resolve_device
from common.trainer import TRAIN_DEFAULTS, Trainer, build_scheduler

STEPS = 4  # batches of 16 out of 64 examples


def toy_train(exp_dir: Path, stop_after_epochs: int | None = None, fail_before_start: bool = False,
              **train) -> dict:
    """A trainer as a stage writes one: data and model, then the skeleton around its own loop body."""
    cfg = {"exp_dir": str(exp_dir), "seed": 0,
           "train": {**TRAIN_DEFAULTS, "epochs": 4, "average_last": 2, "warmup_epochs": 0.5, "log_interval": 3,
                     **train}}
    log = open_run(exp_dir, cfg, "toy.train")
    seed_everything(cfg["seed"])
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))  # dropout: RNG state must resume
    if fail_before_start:
        raise ValueError("no such model")
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True)
    trainer = Trainer(cfg, model, model.parameters(), steps_per_epoch=STEPS, log=log, name="toy.train",
                      describe=lambda m: {"kind": "toy", "model_args": {}, "state_dict": m.state_dict()},
                      stop_after_epochs=stop_after_epochs)
    for _ in trainer.epochs():
        model.train()
        order = torch.randperm(64)  # the global torch RNG: resumed from last.pt
        for b in range(STEPS):
            rows = order[b * 16:(b + 1) * 16]
            inputs, targets = trainer.to_device((x[rows], y[rows]))
            with trainer.autocast():
                out = trainer.forward_model(inputs)
            loss = F.mse_loss(out.float(), targets)
            trainer.step(loss)
        with torch.no_grad():
            val_loss = F.mse_loss(model.eval()(x), y).item()
        trainer.end_epoch({"loss": loss.item(), "val_loss": val_loss}, -val_loss)
    return trainer.finish()


def _weights(exp: Path, name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(exp / name)["state_dict"]


def _same_run(a: Path, b: Path) -> None:
    for name in ("last.pt", "best.pt", "averaged.pt"):
        wa, wb = _weights(a, name), _weights(b, name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]  # noqa: E731
    assert strip(load_checkpoint(a / "last.pt")["history"]) == strip(load_checkpoint(b / "last.pt")["history"])
    assert (a / "history.jsonl").read_text().count("\n") == (b / "history.jsonl").read_text().count("\n")
    assert not [p.name for p in b.iterdir() if ".tmp" in p.name]  # no temporary file left behind


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("straight") / "exp"
    result = toy_train(exp)
    assert result["epoch"] == 4 and len(result["history"]) == 4
    history = result["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # it learns
    assert load_checkpoint(exp / "averaged.pt")["averaged_epochs"] == 2
    for name in ("config.yaml", "command.sh", "train.log", "history.jsonl", "curves.png"):
        assert (exp / name).is_file(), name
    return exp


def test_resume_after_stop_is_bit_identical(straight, tmp_path):
    exp = tmp_path / "exp"
    first = toy_train(exp, stop_after_epochs=1)
    assert first["epoch"] == 1 and not (exp / "averaged.pt").exists()
    assert toy_train(exp, stop_after_epochs=2)["epoch"] == 3
    assert toy_train(exp)["epoch"] == 4
    _same_run(straight, exp)
    assert toy_train(exp)["epoch"] == 4  # finished: a rerun does nothing and succeeds


def test_kill_before_last_checkpoint_of_final_epoch(straight, tmp_path, monkeypatch):
    """Killed after best/averaged/history of the last epoch but before its last.pt: the rerun redoes the epoch and
    every output equals an uninterrupted run's (the window where a resume once reported success on stale files)."""
    exp = tmp_path / "exp"
    save = common.trainer.save_checkpoint

    def dies_at_final_last(checkpoint, path):
        if Path(path).name == "last.pt" and checkpoint["epoch"] == 4:
            # as a kill in the middle of the write would: a partial temporary file, then the end
            (Path(path).parent / f".last.pt.tmp{999999}").write_bytes(b"")
            raise KeyboardInterrupt
        save(checkpoint, path)

    monkeypatch.setattr(common.trainer, "save_checkpoint", dies_at_final_last)
    with pytest.raises(KeyboardInterrupt):
        toy_train(exp)
    assert load_checkpoint(exp / "last.pt")["epoch"] == 3 and load_checkpoint(exp / "averaged.pt")["epoch"] == 4
    monkeypatch.setattr(common.trainer, "save_checkpoint", save)
    assert toy_train(exp)["epoch"] == 4
    _same_run(straight, exp)


def test_a_failed_start_claims_no_folder(tmp_path):
    exp = tmp_path / "exp"
    with pytest.raises(ValueError, match="no such model"):
        toy_train(exp, fail_before_start=True)
    assert not (exp / "config.yaml").exists()
    assert toy_train(exp, epochs=1, average_last=1)["epoch"] == 1  # the corrected rerun is not "another config"
    with pytest.raises(ValueError, match="different configuration.*train.epochs"):
        toy_train(exp, epochs=2, average_last=1)


def test_a_failed_plot_does_not_stop_training(tmp_path, monkeypatch):
    def no_plot(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(common.run, "plot_curves", no_plot)
    assert toy_train(tmp_path / "exp", epochs=2, average_last=1)["epoch"] == 2
    log = (tmp_path / "exp" / "train.log").read_text()
    assert "could not draw" in log and "No space left" in log
    assert (tmp_path / "exp" / "history.jsonl").read_text().count("\n") == 2


def test_missing_output_of_a_finished_run_is_an_error(tmp_path):
    toy_train(tmp_path / "exp", epochs=1, average_last=1)
    (tmp_path / "exp" / "averaged.pt").unlink()
    with pytest.raises(ValueError, match="averaged.pt is missing"):
        toy_train(tmp_path / "exp", epochs=1, average_last=1)


def test_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="train.schedule: unknown 'linear'"):
        common.trainer.check_train_settings({**TRAIN_DEFAULTS, "schedule": "linear"}, "x.yaml")
    with pytest.raises(ValueError, match="train.epochs >= 1"):
        common.trainer.check_train_settings({**TRAIN_DEFAULTS, "epochs": 0}, "x.yaml")
    bad = [({"precision": "fp8"}, "train.precision: unknown 'fp8'"), ({"device": "tpu"}, "train.device: unknown"),
           ({"device": "cpu", "precision": "fp16"}, "fp16 needs a GPU")]
    if not torch.cuda.is_available():
        bad.append(({"device": "cuda:1"}, "torch sees no GPU here"))
    for settings, message in bad:
        with pytest.raises(ValueError, match=message):
            common.trainer.check_train_settings({**TRAIN_DEFAULTS, **settings}, "x.yaml")


def test_bf16_autocast_trains_and_resumes_bit_for_bit(tmp_path):
    """Mixed precision on the CPU (bf16 autocast, the GPU default's dtype): the forward pass runs in bf16, the
    weights stay fp32, the loss falls, and a stopped run resumes to the straight run's weights."""
    straight = toy_train(tmp_path / "straight", precision="bf16")
    assert straight["history"][-1]["val_loss"] < straight["history"][0]["val_loss"]
    toy_train(tmp_path / "resumed", precision="bf16", stop_after_epochs=2)
    toy_train(tmp_path / "resumed", precision="bf16")
    _same_run(tmp_path / "straight", tmp_path / "resumed")
    weights = _weights(tmp_path / "straight", "last.pt")
    assert all(w.dtype == torch.float32 for w in weights.values())
    fp32 = _weights(Path(toy_train(tmp_path / "fp32", precision="fp32")["exp_dir"]), "last.pt")
    assert any(not torch.equal(weights[k], fp32[k]) for k in weights)  # bf16 really ran


def test_each_torchrun_process_gets_its_own_gpu(monkeypatch):
    """``cuda`` and ``auto`` mean this process's GPU: under torchrun, LOCAL_RANK's (two processes on one GPU break
    NCCL); an index given is kept, and the CPU stays the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    resolve = resolve_device
    assert resolve("cuda") == resolve("auto") == torch.device("cuda", 1)
    assert resolve("cuda:0") == torch.device("cuda", 0) and resolve("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve("cuda") == torch.device("cuda", 0)


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    """auto: bf16 on a CPU with AMX tiles, fp32 on one without; explicit choices are kept."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert common.trainer.resolve_precision("auto", cpu) == "bf16"
    assert common.trainer.resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert common.trainer.resolve_precision("auto", cpu) == "fp32"
    assert common.trainer.resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_schedules(schedule):
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    settings = {**TRAIN_DEFAULTS, "schedule": schedule, "epochs": 3, "warmup_epochs": 0.5, "lr_decay": 0.5,
                "min_lr_ratio": 0.1}
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    if schedule == "cosine":  # linear warm-up from lr / 5 to the peak at step 5, cosine down to lr * 0.1
        assert lrs[:6] == pytest.approx([0.2, 0.36, 0.52, 0.68, 0.84, 1.0])
        assert lrs[-1] == pytest.approx(0.1, abs=0.01) and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    else:  # linear warm-up to the peak at step 4, then halved every epoch (10 steps)
        assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
        assert lrs[15] == pytest.approx(0.5) and lrs[25] == pytest.approx(0.25)


def test_warmup_in_steps_and_exponential_decay_to_the_floor():
    """The SJTU captioning schedule: warm-up over a number of iterations, then exponential decay that ends at the
    floor (5e-4 to 5e-7 in the report) on the last step."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=5e-4)
    settings = {**TRAIN_DEFAULTS, "schedule": "exponential", "epochs": 4, "warmup_steps": 6, "warmup_epochs": 3.0,
                "lr_decay": None, "min_lr_ratio": 1e-3}
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[5] == pytest.approx(5e-4) and lrs[4] == pytest.approx(5e-4 * 5 / 6)  # warm-up: 6 steps, not 30
    assert lrs[-1] == pytest.approx(5e-7) and all(a > b for a, b in zip(lrs[6:], lrs[7:]))
    ratios = [b / a for a, b in zip(lrs[6:], lrs[7:])]
    assert max(ratios) == pytest.approx(min(ratios))  # one factor per step


def test_running_mean_is_the_python_mean_of_the_steps_values_read_once():
    values = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 0.25, 1e-3, 3.5)]
    mean = common.trainer.RunningMean()
    assert mean.mean() == 0.0
    for value in values:
        mean.add(value.requires_grad_())  # a loss: its graph is not kept
    assert mean.count == 4 and not mean.total.requires_grad
    assert mean.mean() == sum(v.item() for v in values) / 4  # bit for bit, as the loops summed before
    assert mean.mean(all_processes=True) == mean.mean()  # one process: nothing to gather
