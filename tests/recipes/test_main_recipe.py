"""The default recipe on a tiny corpus: the main job (stages 0-9) killed once and resumed, then each later stage group
on its outputs, as a user would run them. One file, so that one worker makes the run once (tests are distributed by
file)."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.recipes.test_recipes import _finish, _run, _tiny_conf


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


def record_of(exp: Path) -> dict:
    """How stage 8 decoded the ensemble (chosen on the validation split)."""
    return json.loads((exp / "decode/ensemble_scst/predictions.decoding.json").read_text())


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
    assert "Training arithmetic: fp32 (" in results and "bf16" not in results, results  # the configs choose fp32
    record = json.loads((exp / "decode/ensemble_scst/predictions.decoding.json").read_text())
    assert record["length_norm"] in (0.0, 0.5, 1.0, 1.5, 2.0) and len(record["validation_cider_d"]) == 5 * 7
    assert record["rerank"].endswith("retrieval_cnn10/best.pt") and record["rerank_weight"] >= 0
    for variant, label in (("plain", "plain beam search"), ("no_rerank", "no re-ranking")):  # from the same beams
        assert (exp / f"decode/ensemble_scst/scores.{variant}.json").is_file()
        assert f"| ensemble_scst ({label}) |" in results and f"- ensemble_scst vs ensemble_scst ({label}): CIDEr-D " \
            in results and f"- ensemble_scst vs ensemble_scst ({label}): SBERT-sim " in results, results
    assert "- words: mean words per caption; the references: " in results, results


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
    bundle = load_bundle(exp / "serve/caption_bundle.pt")
    assert len(bundle.scorer.models) == 2 and bundle.reranker is not None  # re-ranking as stage 8 chose it
    assert bundle.decoding["rerank_weight"] == record_of(exp)["rerank_weight"]
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
    by_type = results.split("Accuracy minus the majority answer's, by type")[1].split("##")[0]
    assert "| lm_merged_open | " in by_type and "| lm_lora | " in by_type and "| lm_lora_open" not in by_type, results
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
