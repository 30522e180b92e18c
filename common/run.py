"""An experiment folder: its config, the command that made it, a log, the metric history and its plot.

``exp_dir/config.yaml`` fixes what the folder holds: starting a run in a folder made by a different configuration
is refused, so a resumed run can never silently mix two experiments.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from common.config import dump_config
from common.io import atomic_write, write_text_atomic

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def open_run(exp_dir: str | Path, config: Mapping[str, Any], name: str, main_process: bool = True) -> logging.Logger:
    """Check that ``exp_dir`` is new or holds a run of this same ``config``; return a logger writing to
    ``exp_dir/<name>.log`` and stderr. ``config.yaml`` is written later, by :func:`commit_run`, once the run has
    really started: a start that fails (a bad model name, a missing file) must not claim the folder."""
    exp_dir = Path(exp_dir)
    saved = exp_dir / "config.yaml"
    if saved.is_file():
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
        if previous != json.loads(json.dumps(dict(config))):
            diff = sorted(_diff(previous or {}, dict(config)))
            raise ValueError(f"{exp_dir}: holds a run of a different configuration (differs in: {', '.join(diff)}); "
                             "use another exp_dir or remove this one")
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    if main_process:
        exp_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(exp_dir / f"{name.split('.')[-1]}.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(file_handler)
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(console)
    return logger


def commit_run(exp_dir: str | Path, config: Mapping[str, Any], name: str) -> None:
    """Write ``config.yaml`` (what the folder holds from now on) and ``command.sh`` (to replay the run)."""
    exp_dir = Path(exp_dir)
    write_text_atomic(exp_dir / "config.yaml", dump_config(config))
    write_text_atomic(exp_dir / "command.sh",
                      "python -m " + name + " " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n")


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = set(a) | set(b)
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def write_history(exp_dir: str | Path, history: Sequence[Mapping[str, Any]],
                  log: logging.Logger | None = None) -> None:
    """Rewrite ``history.jsonl`` (one record per epoch) and ``curves.png`` from the full history. The plot is a
    convenience: a failure to draw it (a full disk, a missing font) is logged, and training goes on."""
    exp_dir = Path(exp_dir)
    write_text_atomic(exp_dir / "history.jsonl", "".join(json.dumps(dict(record)) + "\n" for record in history))
    try:
        plot_curves(history, exp_dir / "curves.png")
    except Exception as err:  # matplotlib and the file system raise many types
        (log or logging.getLogger(__name__)).warning("could not draw %s: %s: %s", exp_dir / "curves.png",
                                                     type(err).__name__, err)


def plot_curves(history: Sequence[Mapping[str, Any]], out_png: str | Path) -> None:
    """One panel per numeric metric of the history, against the optimiser step where every record has it (learning
    curves of runs with different epoch lengths then line up), else the epoch. Drawn on a bare ``Figure`` with fixed
    margins: it is redrawn after every epoch, and pyplot's start-up and ``tight_layout`` cost more than the drawing."""
    from matplotlib.figure import Figure

    x_key = "step" if history and all("step" in record for record in history) else "epoch"
    keys = [k for k in (history[0] if history else {}) if k not in ("epoch", "step")
            and isinstance(history[0][k], (int, float)) and not isinstance(history[0][k], bool)]
    if not keys:
        return
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    xs = [record.get(x_key, i) for i, record in enumerate(history)]
    for ax, key in zip(axes.flat, keys):
        ax.plot(xs, [record.get(key, float("nan")) for record in history], marker="o", markersize=3)
        ax.set_title(key)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.subplots_adjust(left=0.24 / cols, right=0.98, bottom=0.25 / rows, top=1 - 0.15 / rows, wspace=0.3,
                        hspace=0.55)
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, dpi=90, format="png")
