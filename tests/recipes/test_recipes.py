"""Every config in recipes/ builds, and the default recipe runs stage by stage on a tiny corpus."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from common import load_config

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
    elif path.name.startswith("tagger"):
        from features.encoders import build_audio_encoder, encoder_spec
        from features.tagger import DEFAULTS

        config = load_config(DEFAULTS, path)
        assert build_audio_encoder(**encoder_spec(config["model"]["audio_encoder"])).clip_dim > 0
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
        kind = next((k for k in ("retrieval", "tagger", "caption_lm") if path.name.startswith(k)),
                    "caption_scst" if "scst" in path.name else "caption_xe")
        if kind == "caption_xe" and config["model"]["decoder"] == "transformer":
            config["model"]["decoder_args"].update({"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64})
        elif kind == "caption_xe":
            config["model"]["decoder_args"].update({"d_model": 32, "embed_dim": 32, "attn_dim": 32})
        crop = config.get("data", {}).get("crop_seconds", 0)
        config = _deep_update(config, TINY[kind])
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


# One tiny run of the main job (stages 0-9, killed once and resumed) that the tests of the later stages build on, as a
# user would: they run in this order, each checking its own stages' contract (a test file runs on one worker).


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory) -> Path:
    """The folder (conf, data, exp) of the main job on a tiny corpus, killed during retrieval training and resumed."""
    root = tmp_path_factory.mktemp("recipe")
    _tiny_conf(root / "conf")
    exp = root / "exp"
    proc = _run(root)
    deadline = time.time() + 300
    while not (exp / ".done" / "manifests").exists() or not list(exp.glob("retrieval_cnn10/*.log")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "recipe did not reach stage 2"
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _finish(_run(root))
    return root


@pytest.fixture(scope="module")
def tiny_lm_folder(recipe_run) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, for the LM stages (10-16)."""
    from transformers import AutoTokenizer

    from common.lm import _packaged_gguf
    from tests.conftest import save_tiny_lm

    gguf = _packaged_gguf("smollm2")
    return save_tiny_lm(recipe_run / "tiny_lm", AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name),
                        seed=0)


@pytest.mark.slow
def test_default_recipe_runs_after_a_kill_and_writes_every_result(recipe_run):
    exp = recipe_run / "exp"
    results = (exp / "results.md").read_text()
    for system in ("retrieval_cnn10", "retrieval_cnn6", "retrieval_ensemble", "transformer_xe", "transformer_scst",
                   "gru_xe", "gru_scst", "ensemble_scst", "nearest_neighbour"):
        assert f"| {system} |" in results, results
    assert "- transformer_scst vs transformer_xe: CIDEr-D " in results, results  # with its bootstrap interval
    predictions = yaml.safe_load((exp / "decode/ensemble_scst/predictions.json").read_text())
    evaluation = yaml.safe_load((recipe_run / "data/evaluation/captions.json").read_text())
    assert sorted(p["audio_id"] for p in predictions) == sorted(evaluation)
    submission = (exp / "decode/ensemble_scst/submission.csv").read_text().splitlines()
    assert submission[0] == "file_name,caption_predicted" and len(submission) == len(evaluation) + 1
    assert (exp / "results.png").stat().st_size > 0


@pytest.mark.slow
def test_rerun_skips_every_step_and_serving_stage_bundles_and_indexes(recipe_run):
    exp = recipe_run / "exp"
    # Rerun after it finished: nothing is done again.
    out = _finish(_run(recipe_run), timeout=300)
    ran = [line for line in out.splitlines() if ": python -m " in line]
    assert ran == [], ran
    assert out.count("already done, skipped") >= 15
    # For the server (stage 23): the SCST ensemble as one bundle, the evaluation audio indexed.
    _finish(_run(recipe_run, "--stage", "23", "--stop_stage", "23"), timeout=300)
    from captioning.bundle import load_bundle
    from retrieval.index import read_index

    evaluation = yaml.safe_load((recipe_run / "data/evaluation/captions.json").read_text())
    assert len(load_bundle(exp / "serve/caption_bundle.pt").scorer.models) == 2
    index = read_index(exp / "serve/index.h5")
    assert sorted(Path(p).name for p in index["paths"]) == sorted(evaluation) and len(index["embeddings"]) == 2


@pytest.mark.slow
def test_llm_captioner_stages(recipe_run, tiny_lm_folder):
    """Stages 10-13 beside the main job, on a tiny random Llama with SmolLM2's tokenizer; one LoRA member merged with
    the first model shows the merging as two would."""
    exp = recipe_run / "exp"
    _finish(_run(recipe_run, "--stage", "10", "--stop_stage", "13",
                 env={"SYNTH_LM": str(tiny_lm_folder), "SYNTH_LM_MEMBER_SEEDS": "2"}))
    results = (exp / "results.md").read_text()
    for system in ("lm_lora", "lm_pengi", "lm_member2", "lm_merged"):
        assert f"| {system} |" in results, results
    assert "- lm_lora vs transformer_scst: CIDEr-D " in results and "- lm_pengi vs lm_lora: CIDEr-D " in results
    assert "## Audio question answering" in results and "| majority answer |" in results, results
    assert "- lm_pengi vs majority answer: accuracy " in results, results
    for system in ("lm_lora", "lm_pengi", "lm_merged", "zero_shot_retrieval"):
        assert f"| {system} | " in results.split("## Classification")[1], results
    assert "- lm_merged vs zero_shot_retrieval: top-1 " in results, results
    merged = torch.load(exp / "caption_lm_merged/merged.pt", weights_only=True)
    assert len(merged["merged_from"]) == 2 and merged["model_args"]["lora"]["r"] == 32


@pytest.mark.slow
def test_keyword_to_caption_stages(recipe_run, tiny_lm_folder):
    """CLAP's keyword-to-caption (stages 14-16): a second tiny corpus used by its labels, its captions written by the
    template and by the tiny LM, retrieval trained with each, zero-shot and retrieval compared."""
    _finish(_run(recipe_run, "--stage", "14", "--stop_stage", "16",
                 env={"SYNTH_LM": str(tiny_lm_folder), "SYNTH_LABELLED_CLIPS": "20",
                      "AACTK_CACHE": str(recipe_run / "cache")}))
    results = (recipe_run / "exp/results.md").read_text()
    assert "## Keyword-to-caption" in results and "| + generated captions | " in results, results
    assert "- + generated captions vs captions only: zero-shot top-1 " in results, results
    assert "- + template captions vs captions only: t2a mAP@10 " in results, results
    captions = json.loads((recipe_run / "data/labelled_template/development/captions.json").read_text())
    assert all(c[0].startswith("The sound of ") for c in captions.values())


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
    for row in ("| retrieval encoder vs tagger", "| retrieval encoder vs untrained encoder",
                "| transformer: SCST vs XE", "| gru: SCST vs XE", "| captioning ensemble vs its best member",
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
