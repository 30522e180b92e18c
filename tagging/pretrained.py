"""The pretrained audio encoders shipped with the project, and the check that a reproduction matches one.

    python -m tagging.pretrained                                   # list them: file, SHA-256, training, mAP
    python -m tagging.pretrained --check exp/pretrain_cnn10/audio_encoder.pt --like cnn10_synth.pt

Each is the ``audio_encoder.pt`` of a ``tagging.train`` run on generated scenes (``recipes/synth/conf/pretrain_*.yaml``,
seed 0, fp32), in the project's audio-encoder format, read by ``features.weights.load_audio_encoder`` (the loader of
official PANNs weights) and by ``retrieval.train --train.audio_init``. Its card is ``tagging/checkpoints/README.md``.
A reproduction matches when its SHA-256 is the shipped one; where it differs (another CPU's arithmetic), its best
validation mAP (the run's ``history.jsonl``) must lie within :data:`MAP_TOLERANCE` of the shipped one.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below

import json
from pathlib import Path

from features.weights import checkpoint_sha256

FOLDER = Path(__file__).resolve().parent / "checkpoints"
MAP_TOLERANCE = 0.02
# file -> how it was made and what it scores (the held-out generated set: 512 clips, seed 2027, 213 tags)
SHIPPED: dict[str, dict] = {
    "cnn10_synth.pt": {
        "sha256": "6d69afa43f6c377c97f086ee34bd33defb7b5592abf6ffbd6df917dff12f3b4c", "val_mAP": 0.4658,
        "trained_on": "73,728 generated scenes (seed 2026), 213 tags",
        "command": "python -m tagging.train --config recipes/synth/conf/pretrain_cnn10.yaml --exp_dir exp/pretrain_cnn10",
    },
    "cnn6_synth.pt": {
        "sha256": "3964b4c0ae46d93403c6244cefb97d59236ea216d64f57789ffae3025be31c0d", "val_mAP": 0.4437,
        "trained_on": "73,728 generated scenes (seed 2026), 213 tags",
        "command": "python -m tagging.train --config recipes/synth/conf/pretrain_cnn6.yaml --exp_dir exp/pretrain_cnn6",
    },
}


def pretrained_encoder(name: str) -> Path:
    """The shipped file ``name`` (e.g. ``cnn10_synth.pt``), its SHA-256 checked; ValueError naming what is wrong."""
    if name not in SHIPPED:
        raise KeyError(f"no pretrained encoder {name!r} (shipped: {', '.join(sorted(SHIPPED))})")
    path = FOLDER / name
    if not path.is_file():
        raise ValueError(f"{path}: missing from this installation")
    if checkpoint_sha256(path) != SHIPPED[name]["sha256"]:
        raise ValueError(f"{path}: SHA-256 differs from the shipped {SHIPPED[name]['sha256']} (changed or damaged)")
    return path


def matches(path: str | Path, like: str) -> str:
    """Whether the reproduction ``path`` matches the shipped ``like``: identical, or its mAP within tolerance."""
    if like not in SHIPPED:
        raise KeyError(f"no pretrained encoder {like!r} (shipped: {', '.join(sorted(SHIPPED))})")
    path, card = Path(path), SHIPPED[like]
    if checkpoint_sha256(path) == card["sha256"]:
        return f"{path}: identical to the shipped {like} (SHA-256 {card['sha256']})"
    history = path.parent / "history.jsonl"
    if not history.is_file():
        raise ValueError(f"{path}: differs from the shipped {like}, and {history} is missing to compare its mAP")
    best = max(json.loads(line)["val_mAP"] for line in history.read_text(encoding="utf-8").splitlines() if line)
    gap = best - card["val_mAP"]
    if abs(gap) > MAP_TOLERANCE:
        raise ValueError(f"{path}: not a reproduction of {like}: best validation mAP {best:.4f} against the shipped "
                         f"{card['val_mAP']:.4f} (more than {MAP_TOLERANCE} apart)")
    return (f"{path}: not bitwise the shipped {like} (another CPU's arithmetic), but its validation mAP {best:.4f} is "
            f"within {MAP_TOLERANCE} of the shipped {card['val_mAP']:.4f} ({gap:+.4f})")


def main(check: str | None = None, like: str | None = None) -> None:
    """List the shipped pretrained encoders, or ``--check FILE --like NAME``: does a reproduction match?"""
    if check is not None:
        if like is None:
            raise ValueError(f"--check needs --like NAME (one of {', '.join(sorted(SHIPPED))})")
        print(matches(check, like))
        return
    for name, card in sorted(SHIPPED.items()):
        print(f"{FOLDER / name}  SHA-256 {card['sha256']}  val mAP {card['val_mAP']:.4f}  {card['trained_on']}  "
              f"reproduce: {card['command']}")


if __name__ == "__main__":
    from common.cli import run

    run(main, "tagging.pretrained")
