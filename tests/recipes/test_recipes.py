"""Every config in recipes/ builds; the recipe's plumbing; the claims recipe and the long-audio stages on tiny corpora
(the main job's own stages: test_main_recipe.py)."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from common import load_config
from features.store import read_attrs
from tagging.pretrained import SHIPPED

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(REPO.glob("recipes/*/conf/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_recipe_config_builds(path):
    if path.name.startswith("caption_lm"):  # the LM itself is built in tests/captioning (it takes seconds)
        from captioning.models.prefix_lm import MAPPINGS
        from captioning.train_lm import DEFAULTS

        config = load_config(DEFAULTS, path)
        assert config["model"]["mapping"] in MAPPINGS and config["model"]["prompt"].startswith("[audio]")
        assert config["model"]["lora"]["r"] == 0 or set(config["model"]["lora"]["targets"]) == {"q_proj", "k_proj"}
    elif path.name.startswith(("tagger", "pretrain")):
        from features.encoders import build_audio_encoder, encoder_spec
        from tagging.train import DEFAULTS, load_config_checked

        config = load_config_checked(str(path), {"data.train_manifest": "set", "data.val_manifest": ""})
        encoder = build_audio_encoder(**encoder_spec(config["model"]["audio_encoder"]))
        assert encoder.clip_dim > 0 and set(config) == set(DEFAULTS)
    elif path.name.startswith("retrieval"):
        from retrieval.model import build_model
        from retrieval.train import DEFAULTS, _model_args

        from common.text_encoder import TextEncoderFilesError

        config = load_config(DEFAULTS, path)
        try:
            model = build_model(_model_args(config["model"]))
        except TextEncoderFilesError as err:  # BERT / RoBERTa of the published recipes: not on this machine
            assert config["model"]["text_encoder"]["name"] in ("bert", "bert_medium", "roberta"), err
            config["model"]["text_encoder"]["name"] = "minilm"  # the rest of the model still builds
            model = build_model(_model_args(config["model"]))
        assert sum(p.numel() for p in model.parameters()) > 0
        if config["train"]["audio_init"]:  # the shipped pretrained weights load strictly into the config's encoder
            from common.checkpoint import load_state_dict_checked
            from features.weights import load_audio_encoder

            init = REPO / config["train"]["audio_init"]
            load_state_dict_checked(model.audio_encoder, load_audio_encoder(init).state_dict(), str(init), strict=True)
    else:
        from captioning.models import build_captioner
        from captioning.train import DEFAULTS

        config = load_config(DEFAULTS, path)
        assert config["train"]["mode"] in ("xe", "scst")
        if config["train"]["mode"] == "xe":
            model = build_captioner({**config["model"], "encoder_args": config["model"]["encoder_args"] or {},
                                     "decoder_args": config["model"]["decoder_args"] or {},
                                     "frame_dim": 64, "vocab_size": 50})
            assert sum(p.numel() for p in model.parameters()) > 0


TINY = {  # settings that make each stage of the default recipe take seconds
    "retrieval": {"train": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0.1},
                  "data": {"crop_seconds": 2.0, "num_workers": 0},
                  "model": {"audio_encoder": {"width": 0.125}, "embed_dim": 32}},
    "caption_xe": {"train": {"epochs": 2, "average_last": 1},
                   "model": {"encoder_args": {"hidden": 32, "n_layers": 1}},
                   "val": {"beam_size": 2, "max_len": 12}},
    "caption_scst": {"train": {"epochs": 1, "average_last": 1}, "scst": {"num_samples": 2, "max_len": 12},
                     "val": {"beam_size": 2, "max_len": 12}},
    "tagger": {"train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0.1}, "data": {"crop_seconds": 2.0},
               "model": {"audio_encoder": {"width": 0.125}}},
    "pretrain": {"train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0.1},
                 "data": {"crop_seconds": 2.0, "num_workers": 0, "generated": {"clips_per_epoch": 8, "val_clips": 4}},
                 "model": {"audio_encoder": {"width": 0.125}}},
    "caption_lm": {"train": {"epochs": 1, "batch_size": 8}, "data": {"val_clips": 4},
                   "val": {"beam_size": 2, "max_len": 8}},
}


def _deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        base[key] = _deep_update(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
    return base


TINY_AST = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
            "max_length": 256}  # a 2.56-s window


def _tiny_conf(folder: Path, corpus: str = "synth") -> Path:
    folder.mkdir(parents=True)
    for path in sorted((REPO / "recipes" / corpus / "conf").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        kind = next((k for k in ("retrieval", "tagger", "pretrain", "caption_lm") if path.name.startswith(k)),
                    "caption_scst" if "scst" in path.name else "caption_xe")
        if kind == "caption_xe" and config["model"]["decoder"] == "transformer":
            config["model"]["decoder_args"].update({"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64})
        elif kind == "caption_xe":
            config["model"]["decoder_args"].update({"d_model": 32, "embed_dim": 32, "attn_dim": 32})
        crop = config.get("data", {}).get("crop_seconds", 0)
        width = config.get("model", {}).get("audio_encoder", {}).get("width")
        config = _deep_update(config, TINY[kind])
        if config.get("train", {}).get("audio_init"):  # the shipped pretrained weights: their own width
            config["model"]["audio_encoder"]["width"] = width
        if kind == "retrieval" and crop is None:  # feature fusion sees whole clips
            config["data"]["crop_seconds"] = None
        if kind == "retrieval" and config["model"]["audio_encoder"]["name"] == "wavegram_logmel_cnn14":
            config["model"]["audio_encoder"]["width"] = 0.25  # the narrowest its wavegram branch allows
        if kind == "retrieval" and config["model"]["audio_encoder"]["name"] == "ast":
            config["model"]["audio_encoder"].update(width=None, args={**config["model"]["audio_encoder"]["args"],
                                                                       **TINY_AST})
        (folder / path.name).write_text(yaml.safe_dump(config))
    return folder


def _run(tmp_path: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "SYNTH_CLIPS": "24", **(env or {})}
    cmd = ["bash", str(REPO / "recipes/run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
           "--conf", str(tmp_path / "conf"), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def _finish(proc: subprocess.Popen, timeout: int = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_long_audio_stages(tmp_path):
    """Long audio (stages 17-19, independent of the main job): long clips, retrieval on random crops and with feature
    fusion, compared."""
    _tiny_conf(tmp_path / "conf")
    _finish(_run(tmp_path, "--stage", "17", "--stop_stage", "19", env={"SYNTH_LONG_CLIPS": "10"}))
    results = (tmp_path / "exp/results.md").read_text()
    assert "## Long audio" in results and "| feature fusion (aff_2d) | " in results, results
    assert "- fusion vs windows (mean of 10-s window embeddings): t2a mAP@10 " in results, results
    assert json.loads((tmp_path / "exp/long_audio/windows.json").read_text())["long_audio"] == "windows"


@pytest.mark.slow
def test_claims_recipe_writes_every_claim(tmp_path):
    """The claims recipe (stages 0-9 on a larger corpus, then 20-22) on a tiny one: every claim gets its figures,
    interval and verdict."""
    _tiny_conf(tmp_path / "conf")
    proc = _run(tmp_path, "--corpus", "synth_claims", env={"CLAIMS_CLIPS": "40", "CLAIMS_SOURCE_CLIPS": "24"})
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out
    assert "Stage 10" not in out and "Stage 22: done" in out, out  # the recipe's own stages only
    exp = tmp_path / "exp"
    claims = (exp / "claims.md").read_text()
    assert "Not run" not in claims, claims
    for row in ("| retrieval-refined vs pretrained tagger (frozen)", "| retrieval-refined vs untrained encoder",
                "| pretrained tagger (frozen) vs untrained encoder", "| transformer: SCST vs XE", "| gru: SCST vs XE",
                "| captioning ensemble vs its best member on validation",
                "| different architectures vs same architecture from two seeds (2 two-model ensembles each",
                "| fine-tuned vs target only for as many steps as pre-training and fine-tuning, t2a mAP@10",
                "| fine-tuned vs target only, the same epochs as fine-tuning, t2a mAP@10"):
        assert row in claims, (row, claims)
    assert claims.count("| supported |") + claims.count("| contradicted |") + claims.count("| not shown") >= 10
    assert "| ensemble mixed_1: cnn10 + cnn6_seed1 |" in claims, claims
    source = json.loads((tmp_path / "data/source_raw/synth_corpus.json").read_text())
    assert source["max_events"] == 2 and "dog" in source["favour"]
    assert yaml.safe_load((exp / "retrieval_cnn6_seed1/config.yaml").read_text())["seed"] == 1
    same = json.loads((exp / "retrieval_systems/same_cnn10.json").read_text())
    assert [Path(c).parent.name for c in same["checkpoints"]] == ["retrieval_cnn10", "retrieval_cnn10_seed1"]
    # the control trains on the target alone for the steps of pre-training + fine-tuning: more epochs than either
    epochs = [yaml.safe_load((exp / f"retrieval_{m}_cnn10/config.yaml").read_text())["train"]["epochs"]
              for m in ("target_long", "finetuned")]
    assert epochs[0] > epochs[1], epochs
    # claim 1: the shipped tagger's features, and two seeds of each trained condition (encoder and captioner)
    assert read_attrs(exp / "features_pretrained/evaluation.h5")["checkpoint_sha256"] == SHIPPED["cnn10_synth.pt"]["sha256"]
    seeds = {run: yaml.safe_load((exp / f"caption_gru_xe_{run}/config.yaml").read_text())["seed"]
             for run in ("pretrained_cap1", "pretrained_cap2", "retrieval_seed1_cap2", "untrained_seed1_cap2")}
    assert seeds == {"pretrained_cap1": 1, "pretrained_cap2": 2, "retrieval_seed1_cap2": 2, "untrained_seed1_cap2": 2}
    finetuned = yaml.safe_load((exp / "retrieval_finetuned_cnn10/config.yaml").read_text())
    assert finetuned["train"]["init"].endswith("retrieval_source_cnn10/best.pt")


def test_background_steps_run_together_on_one_thread_and_a_failure_stops_the_recipe(tmp_path):
    """recipes/lib.sh: with parallel_jobs 2, steps run two at a time with OMP_NUM_THREADS=1; a failed one stops the
    recipe after the one beside it has finished and recorded itself; a step left alone keeps the machine's threads."""
    script = f"""
set -euo pipefail
exp={tmp_path}; log_file={tmp_path}/run.log; stage=0; stop_stage=9; parallel_jobs=2
. {REPO}/recipes/lib.sh
background step slow bash -c 'sleep 1; echo "threads $OMP_NUM_THREADS" > {tmp_path}/slow.txt'
background step broken bash -c 'exit 3'
wait_background
echo never
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "never" not in proc.stdout, proc.stdout + proc.stderr
    assert "a step failed" in proc.stderr
    assert (tmp_path / "slow.txt").read_text() == "threads 1\n"
    assert (tmp_path / ".done" / "slow").is_file() and not (tmp_path / ".done" / "broken").exists()
    # one job at a time: the step runs in the recipe's own process, with the machine's threads
    script = script.replace("parallel_jobs=2", "parallel_jobs=1").replace("background step broken", "# ")
    (tmp_path / ".done" / "slow").unlink()
    proc = subprocess.run(["bash", "-c", script.replace("OMP_NUM_THREADS", "{OMP_NUM_THREADS:-unset}")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "7"})
    assert proc.returncode == 0 and "never" in proc.stdout, proc.stderr
    assert (tmp_path / "slow.txt").read_text() == "threads 7\n"
    # two at a time, but a stage with a single step: it keeps the machine's threads
    (tmp_path / ".done" / "slow").unlink()
    proc = subprocess.run(["bash", "-c", script.replace("OMP_NUM_THREADS", "{OMP_NUM_THREADS:-unset}").replace(
        "parallel_jobs=1", "parallel_jobs=2")], capture_output=True, text=True, timeout=60,
        env={**os.environ, "OMP_NUM_THREADS": "7"})
    assert proc.returncode == 0 and "never" in proc.stdout, proc.stderr
    assert (tmp_path / "slow.txt").read_text() == "threads 7\n"
