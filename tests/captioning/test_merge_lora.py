"""Merging LoRA captioners by concatenation: the merged delta is the weighted mean of the members' deltas (checked
through peft's own modules, and against peft's add_weighted_adapter), a merge of one is that member, refusals name
the file and the reason, and the command writes a checkpoint that decoding takes.

Members share one mapping network as the merge requires: one LoRA captioner is trained, the others are copies of it
with new LoRA tensors (other seeds, ranks and alphas), which is all the algebra needs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.checkpoint import load_captioner
from captioning.decode import decode
from captioning.merge_lora import merge_lora
from captioning.train_lm import train
from tests.captioning.test_prefix_lm import batch, lm_overrides

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = [0.5, 0.3, 0.2]
# peft asks transformers whether gradient checkpointing is on, through a name transformers has deprecated
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def with_new_lora(checkpoint: dict, seed: int, r: int, alpha: float) -> dict:
    """A copy of ``checkpoint`` (same mapping network) with random LoRA tensors of rank ``r``."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in checkpoint["state_dict"].items():
        if ".lora_A." in key:
            value = torch.randn(r, value.shape[1], generator=g) * 0.3  # (r, in)
        elif ".lora_B." in key:
            value = torch.randn(value.shape[0], r, generator=g) * 0.3  # (out, r)
        state[key] = value.clone()
    args = {**checkpoint["model_args"], "lora": {**checkpoint["model_args"]["lora"], "r": r, "alpha": alpha}}
    return {**checkpoint, "model_args": args, "state_dict": state}


@pytest.fixture(scope="module")
def members(toy_data, tiny_lm, tmp_path_factory) -> list[Path]:
    """Three mergeable members: a trained one (r 4, alpha 8) and two with other LoRA tensors (r 2, alpha 3 and
    r 3, alpha 7: scalings 1.5 and 7/3, so a misplaced scaling shows)."""
    folder = tmp_path_factory.mktemp("merge")
    train(None, lm_overrides(toy_data, folder / "trained", tiny_lm, **{"train.epochs": 1}))
    trained = torch.load(folder / "trained" / "best.pt", weights_only=True)
    paths = [folder / "trained" / "best.pt", folder / "m1.pt", folder / "m2.pt"]
    torch.save(with_new_lora(trained, seed=1, r=2, alpha=3), paths[1])
    torch.save(with_new_lora(trained, seed=2, r=3, alpha=7), paths[2])
    return paths


def lora_deltas(path: Path) -> dict[str, torch.Tensor]:
    """Each adapted layer's weight delta, B A * scaling, as the loaded captioner's peft modules compute it."""
    from peft.tuners.lora import LoraLayer

    model, _, _ = load_captioner(path)
    return {name: module.get_delta_weight("default").detach() for name, module in model.lm.named_modules()
            if isinstance(module, LoraLayer)}


def test_merged_delta_is_the_weighted_mean_of_the_members(members, tmp_path):
    result = merge_lora([str(p) for p in members], tmp_path / "merged.pt", WEIGHTS)
    assert result == {"out": str(tmp_path / "merged.pt"), "members": 3, "r": 9, "layers": 4}
    merged = lora_deltas(tmp_path / "merged.pt")
    each = [lora_deltas(p) for p in members]
    assert len(merged) == 4 and all(d.keys() == merged.keys() for d in each)
    for name, delta in merged.items():
        expected = sum(w * d[name] for w, d in zip(WEIGHTS, each))
        assert (delta - expected).abs().max() < 1e-6, name
        assert expected.abs().max() > 0.1  # the members' deltas are large enough for a wrong merge to show
        assert all((delta - d[name]).abs().max() > 1e-2 for d in each)  # and the merge is none of them
    ckpt = torch.load(tmp_path / "merged.pt", weights_only=True)
    assert ckpt["model_args"]["lora"] == {"r": 9, "alpha": 9, "dropout": 0.05, "targets": ["q_proj", "k_proj"]}
    assert ckpt["merged_from"] == [{"path": str(p), "weight": w, "r": r, "alpha": a}
                                   for p, w, r, a in zip(members, WEIGHTS, [4, 2, 3], [8, 3, 7])]


def test_merge_equals_peft_add_weighted_adapter(members, tiny_lm, tmp_path):
    """The reference: peft's own concatenation of the same adapters, loaded side by side into one LM."""
    from peft import LoraConfig, get_peft_model

    from common.lm import load_lm

    ckpts = [torch.load(p, weights_only=True) for p in members]
    names = [f"m{i}" for i in range(len(ckpts))]
    peft_model = None
    for name, ckpt in zip(names, ckpts):
        lora = ckpt["model_args"]["lora"]
        config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=list(lora["targets"]))
        if peft_model is None:
            peft_model = get_peft_model(load_lm(str(tiny_lm))[0], config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
    params = dict(peft_model.named_parameters())
    for name, ckpt in zip(names, ckpts):
        for key, value in ckpt["state_dict"].items():
            if ".lora_" in key:
                params[key.removeprefix("lm.").replace(".default.", f".{name}.")].data.copy_(value)
    peft_model.add_weighted_adapter(names, WEIGHTS, "merged", combination_type="cat")
    reference = {k: v for k, v in peft_model.named_parameters() if ".merged." in k}

    merge_lora(members, tmp_path / "merged.pt", WEIGHTS)
    ours = {k: v for k, v in torch.load(tmp_path / "merged.pt", weights_only=True)["state_dict"].items()
            if ".lora_" in k}
    assert len(ours) == len(reference) == 8
    for key, value in ours.items():
        expected = reference[key.removeprefix("lm.").replace(".default.", ".merged.")]
        assert value.shape == expected.shape and torch.allclose(value, expected, rtol=1e-6, atol=1e-7), key


def test_members_trained_on_one_frozen_mapping_merge(members, toy_data, tiny_lm, tmp_path):
    """The real way to make members: LoRA runs that start from one checkpoint with its mapping network frozen."""
    train(None, lm_overrides(toy_data, tmp_path / "member", tiny_lm, **{
        "train.epochs": 1, "seed": 7, "train.init": str(members[0]), "train.freeze_mapping": True}))
    pair = [members[0], tmp_path / "member" / "best.pt"]
    merge_lora(pair, tmp_path / "merged.pt", [0.6, 0.4])
    merged, (first, second) = lora_deltas(tmp_path / "merged.pt"), [lora_deltas(p) for p in pair]
    assert all((first[k] - second[k]).abs().max() > 1e-4 for k in merged)  # the two runs learnt different LoRA
    assert all((merged[k] - 0.6 * first[k] - 0.4 * second[k]).abs().max() < 1e-6 for k in merged)


@pytest.mark.parametrize("chosen,weights", [([1], None), ([1, 2], [1.0, 0.0])], ids=["one member", "zero weight"])
def test_merge_of_one_member_decodes_as_that_member(members, toy_data, tmp_path, chosen, weights):
    member = members[1]  # random LoRA with scaling 1.5: the merge folds it into A
    merge_lora([members[i] for i in chosen], tmp_path / "merged.pt", weights)
    captions = {}
    for name, path in [("member", member), ("merged", tmp_path / "merged.pt")]:
        decode(str(path), str(toy_data["val_features"]), str(tmp_path / f"{name}.json"), beam_size=2, max_len=6)
        captions[name] = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert captions["merged"] == captions["member"] and len(captions["member"]) == 8
    frames, lengths, answers, _ = batch()
    with torch.no_grad():
        logits = {name: load_captioner(path)[0](frames, lengths, answers)["logits"]
                  for name, path in [("member", member), ("merged", tmp_path / "merged.pt"), ("other", members[2])]}
    assert (logits["merged"] - logits["member"]).abs().max() < 1e-5
    assert (logits["other"] - logits["member"]).abs().max() > 1e-2  # LoRA matters: a wrong merge would show


def _kind(c):
    c["kind"] = "retrieval"


def _seq2seq(c):
    c["model_args"] = {"encoder": "bigru", "decoder": "transformer", "frame_dim": 16, "vocab_size": 30}


def _frozen(c):
    del c["model_args"]["lora"]
    c["state_dict"] = {k: v for k, v in c["state_dict"].items() if ".lora_" not in k}


def _lm(c):
    c["model_args"]["lm_fingerprint"] = "0" * 64


def _targets(c):
    c["model_args"]["lora"]["targets"] = ["q_proj", "v_proj"]


def _features(c):
    c["feature_attrs"]["encoder"] = "cnn14"


def _mapping(c):
    c["state_dict"]["mapping.net.0.weight"] = c["state_dict"]["mapping.net.0.weight"] + 1e-4


def _prompt(c):
    c["model_args"]["prompt"] = "Caption [audio]"


@pytest.mark.parametrize("spoil,reason", [
    (_kind, r"bad\.pt: is a 'retrieval' checkpoint, expected 'captioner'"),
    (_seq2seq, r"bad\.pt: not a prefix-LM captioner"),
    (_frozen, r"bad\.pt: a frozen-LM captioner \(no LoRA\)"),
    (_lm, r"bad\.pt: cannot be merged with .*best\.pt: trained with another LM"),
    (_targets, r"bad\.pt: cannot be merged with .*best\.pt: LoRA on other layers"),
    (_features, r"bad\.pt: cannot be merged with .*best\.pt: trained on other features"),
    (_mapping, r"bad\.pt: cannot be merged with .*best\.pt: their mapping networks differ; members must share one"),
    (_prompt, r"bad\.pt: cannot be merged with .*best\.pt: model_args 'prompt' differ"),
], ids=["kind", "seq2seq", "frozen", "lm", "targets", "features", "mapping", "prompt"])
def test_unmergeable_members_are_refused_naming_the_file(members, tmp_path, spoil, reason):
    bad = torch.load(members[1], weights_only=True)
    spoil(bad)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=reason):
        merge_lora([members[0], tmp_path / "bad.pt"], tmp_path / "merged.pt")
    assert not (tmp_path / "merged.pt").exists()


@pytest.mark.parametrize("weights,reason", [
    ([1.0], r"expected one per checkpoint: 2, found 1"),
    ([1.2, -0.2], r"expected non-negative numbers"),
    ([0.7, 0.5], r"expected a sum of 1, found \[0.7, 0.5\] summing to 1.2"),
    ("0.5,half", r"expected comma-separated numbers"),
])
def test_bad_weights_are_refused(members, tmp_path, weights, reason):
    with pytest.raises(ValueError, match=r"Invalid weights\. \(" + reason):
        merge_lora(members[:2], tmp_path / "merged.pt", weights)
    assert not (tmp_path / "merged.pt").exists()


def test_no_checkpoints_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid checkpoints\. \(expected one or more paths"):
        merge_lora("", tmp_path / "merged.pt")


def test_cli_writes_a_checkpoint_that_decode_takes(members, toy_data, tmp_path):
    command = [sys.executable, "-m", "captioning.merge_lora", "--checkpoints", f"{members[0]},{members[2]}",
               "--out", str(tmp_path / "merged.pt")]
    done = subprocess.run(command + ["--weights", "0.7,0.3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert torch.load(tmp_path / "merged.pt", weights_only=True)["merged_from"][1]["weight"] == 0.3
    out = decode(str(tmp_path / "merged.pt"), str(toy_data["val_features"]), str(tmp_path / "pred.json"),
                 beam_size=2, max_len=6, references=str(toy_data["val_captions"]))
    assert out["clips"] == 8 and out["cider_d"] is not None
    refused = subprocess.run(command + ["--weights", "0.7,0.7"], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "captioning.merge_lora: error: Invalid weights. (expected a sum of 1, found [0.7, 0.7] summing to 1.4)"]
