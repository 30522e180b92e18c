"""Merge LoRA captioners into one by concatenation (the DCASE 2024 system merged five LoRA models).

    python -m captioning.merge_lora --checkpoints a/best.pt,b/best.pt,c/best.pt --out merged.pt \
        [--weights 0.5,0.3,0.2]

Member i adds ``delta_i = s_i B_i A_i`` to each adapted weight (``s_i = alpha_i / r_i``, peft's scaling). The merged
adapter stacks the members' A matrices and places their B matrices side by side::

    A = [w_1 s_1 A_1; ...; w_n s_n A_n]    (sum r_i, in)
    B = [B_1, ..., B_n]                     (out, sum r_i)      so  B A = sum_i w_i delta_i

with ``alpha = r = sum r_i``, so that its own scaling is 1. This is the exact weighted mean of the deltas (no
low-rank approximation, unlike an SVD merge) and the same tensors as peft's
``add_weighted_adapter(..., combination_type="cat")``; it is done on the checkpoints' state dicts, so the LM is not
loaded. The result is an ordinary prefix-LM captioner checkpoint, with its members in ``merged_from``.

The members must differ in their LoRA weights only (rank and alpha may differ): one LM (by fingerprint), one kind of
features, the same LoRA targets, prompt and prefix, and one mapping network, tensor for tensor (the report trains it
once and keeps it fixed: ``captioning.train_lm`` with ``train.init`` and ``train.freeze_mapping``). Weights are one
per member, non-negative and summing to 1 (default: equal); they are not normalised, so that a mistyped weight is an
error, not a silently different merge.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from captioning.models.prefix_lm import LORA_DEFAULTS
from common.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from common.cli import run


def merge_weights(weights: str | float | Sequence[float] | None, n: int) -> list[float]:
    """One weight per member (``None``: equal), checked: finite, non-negative, summing to 1."""
    if weights is None:
        return [1.0 / n] * n
    if isinstance(weights, str):
        try:
            weights = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ValueError(f"Invalid weights. (expected comma-separated numbers, found {weights!r})") from None
    values = [float(w) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
    if len(values) != n:
        raise ValueError(f"Invalid weights. (expected one per checkpoint: {n}, found {len(values)}: {values})")
    if not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"Invalid weights. (expected non-negative numbers, found {values})")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"Invalid weights. (expected a sum of 1, found {values} summing to {sum(values):.6g})")
    return values


def lora_member(path: str) -> dict[str, Any]:
    """A checkpoint that can be merged: a prefix-LM captioner with LoRA (settings completed with the defaults)."""
    checkpoint = load_checkpoint(path, kind="captioner")
    args = checkpoint["model_args"]
    if args.get("family") != "prefix_lm":
        raise ValueError(f"{path}: not a prefix-LM captioner (model family {args.get('family', 'seq2seq')!r}); "
                         "only LoRA captioners can be merged")
    if not (args.get("lora") or {}).get("r"):
        raise ValueError(f"{path}: a frozen-LM captioner (no LoRA): it has no adapter to merge")
    checkpoint["lora"] = {**LORA_DEFAULTS, **args["lora"]}
    return checkpoint


def check_mergeable(member: dict[str, Any], path: str, first: dict[str, Any], first_path: str) -> None:
    """Refuse a member that differs from the first in anything but its LoRA weights, rank and alpha."""
    def refuse(reason: str) -> None:
        raise ValueError(f"{path}: cannot be merged with {first_path}: {reason}")

    args, first_args = member["model_args"], first["model_args"]
    if args.get("lm_fingerprint") != first_args.get("lm_fingerprint"):
        refuse(f"trained with another LM (fingerprint {str(args.get('lm_fingerprint'))[:12]} vs "
               f"{str(first_args.get('lm_fingerprint'))[:12]})")
    if sorted(member["lora"]["targets"]) != sorted(first["lora"]["targets"]):
        refuse(f"LoRA on other layers (targets {member['lora']['targets']} vs {first['lora']['targets']})")
    if member["feature_attrs"] != first["feature_attrs"]:
        refuse(f"trained on other features ({member['feature_attrs']} vs {first['feature_attrs']})")
    # the LM's folder may have moved (its fingerprint is its identity); every other setting must match
    for key in sorted((set(args) | set(first_args)) - {"lm", "lora"}):
        if args.get(key) != first_args.get(key):
            refuse(f"model_args {key!r} differ ({args.get(key)!r} vs {first_args.get(key)!r})")
    state, first_state = member["state_dict"], first["state_dict"]
    mapping = sorted(k for k in first_state if ".lora_" not in k)
    if sorted(k for k in state if ".lora_" not in k) != mapping or not all(
            torch.equal(state[k], first_state[k]) for k in mapping):
        refuse("their mapping networks differ; members must share one mapping network (train it once, then each "
               "member from that checkpoint with train.init and train.freeze_mapping)")
    if sorted(k for k in state if ".lora_" in k) != sorted(k for k in first_state if ".lora_" in k):
        refuse("their LoRA layers differ")


def merge_lora(checkpoints: str | Sequence[str], out: str | Path,
               weights: str | float | Sequence[float] | None = None) -> dict[str, Any]:
    """Merge LoRA captioners into one checkpoint ``out`` whose adapter is the weighted mean of theirs.

    Args:
        checkpoints: prefix-LM LoRA captioner checkpoints (comma-separated or a list); one gives that model back.
        out: the merged captioner checkpoint, written atomically.
        weights: one per checkpoint (comma-separated or a list), non-negative, summing to 1; default equal.
    Returns ``{"out", "members", "r", "layers"}`` (``r``: the merged rank, ``layers``: adapted layers).
    """
    paths = checkpoint_paths(checkpoints)
    shares = merge_weights(weights, len(paths))
    members = [lora_member(path) for path in paths]
    for path, member in zip(paths[1:], members[1:]):
        check_mergeable(member, path, members[0], paths[0])

    first = members[0]
    state = {k: v for k, v in first["state_dict"].items() if ".lora_" not in k}  # the shared mapping network
    lora_a = [k for k in first["state_dict"] if ".lora_A." in k]
    for key_a in lora_a:
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        # each member's weight and scaling go into its A block: B A = sum_i w_i s_i B_i A_i
        state[key_a] = torch.cat([m["state_dict"][key_a] * (w * m["lora"]["alpha"] / m["lora"]["r"])
                                  for m, w in zip(members, shares)], dim=0)  # (sum r_i, in)
        state[key_b] = torch.cat([m["state_dict"][key_b] for m in members], dim=1)  # (out, sum r_i)
    rank = sum(int(m["lora"]["r"]) for m in members)
    # dropout acts only if the merged adapter is trained further: the members' largest
    lora = {**first["lora"], "r": rank, "alpha": rank, "dropout": max(m["lora"]["dropout"] for m in members)}
    merged = {"kind": "captioner", "model_args": {**first["model_args"], "lora": lora}, "vocab": first["vocab"],
              "feature_attrs": first["feature_attrs"], "state_dict": state,
              "merged_from": [{"path": str(p), "weight": w, "r": m["lora"]["r"], "alpha": m["lora"]["alpha"]}
                              for p, w, m in zip(paths, shares, members)]}
    save_checkpoint(merged, out)
    return {"out": str(out), "members": len(paths), "r": rank, "layers": len(lora_a)}


if __name__ == "__main__":
    run(merge_lora, "captioning.merge_lora", text_args=("checkpoints", "out", "weights"))
