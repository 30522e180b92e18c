import csv
import json

import pytest
import torch

from captioning.decode import decode
from captioning.train import train
from common import load_checkpoint


def test_one_epoch_run_then_decode(toy_data, tiny, tmp_path):
    result = train(None, tiny(toy_data, tmp_path / "exp", epochs=1, **{"train.average_last": 1}))
    exp = tmp_path / "exp"
    for name in ("last.pt", "best.pt", "averaged.pt", "history.jsonl", "curves.png", "train.log", "config.yaml"):
        assert (exp / name).is_file(), name
    (record,) = result["history"]
    assert record["epoch"] == 1 and 0 < record["loss"] < 10 and record["val_cider_d"] >= 0
    last = load_checkpoint(exp / "last.pt", kind="captioner")
    assert last["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and last["feature_attrs"]["encoder"] == "toy"

    out = decode(str(exp / "averaged.pt"), str(toy_data["val_features"]), str(tmp_path / "pred.json"),
                 csv=str(tmp_path / "pred.csv"), beam_size=2, max_len=8, references=str(toy_data["val_captions"]))
    predictions = json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))
    assert out["clips"] == len(predictions) == 8 and out["cider_d"] >= 0
    assert set(predictions[0]) == {"audio_id", "caption"}
    with open(tmp_path / "pred.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file_name", "caption_predicted"]
    assert [r[0] for r in rows[1:]] == [p["audio_id"] for p in predictions]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(toy_data, tiny, tmp_path):
    settings = {"train.tf_end": 0.5}  # scheduled sampling and dropout draw random numbers: RNG state must resume
    whole = train(None, tiny(toy_data, tmp_path / "whole", epochs=3, **settings))
    first = train(None, tiny(toy_data, tmp_path / "parts", epochs=3, **settings), stop_after_epochs=1)
    assert first["epoch"] == 1 and not (tmp_path / "parts" / "averaged.pt").exists()
    resumed = train(None, tiny(toy_data, tmp_path / "parts", epochs=3, **settings))
    assert resumed["epoch"] == 3
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(whole["history"])
    for name in ("last.pt", "averaged.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "whole" / name)["state_dict"]
        b = load_checkpoint(tmp_path / "parts" / name)["state_dict"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_ensemble_of_two_decoders_from_checkpoints(toy_data, tiny, tmp_path):
    for decoder in ("transformer", "gru"):
        train(None, tiny(toy_data, tmp_path / decoder, decoder=decoder, epochs=1))
    paths = f"{tmp_path / 'transformer' / 'last.pt'},{tmp_path / 'gru' / 'last.pt'}"
    out = decode(paths, str(toy_data["val_features"]), str(tmp_path / "pred.json"), beam_size=3, max_len=8)
    assert out["clips"] == 8 and out["cider_d"] is None


def test_config_errors(toy_data, tiny, tmp_path):
    with pytest.raises(KeyError, match="unknown setting 'train.epoch'"):
        train(None, {"train.epoch": 3})
    with pytest.raises(ValueError, match="train.mode"):
        train(None, tiny(toy_data, tmp_path / "exp", **{"train.mode": "rl"}))
    with pytest.raises(ValueError, match="encoder: expected 'cnn14'"):
        train(None, tiny(toy_data, tmp_path / "exp2", **{"features.expect_encoder": "cnn14"}))


def test_scst_from_xe_checkpoint(toy_data, tiny, tmp_path):
    train(None, tiny(toy_data, tmp_path / "xe", epochs=1))
    result = train(None, tiny(toy_data, tmp_path / "scst", epochs=1, **{
        "train.mode": "scst", "train.init": str(tmp_path / "xe" / "last.pt"), "train.lr": 1e-4,
        "scst.num_samples": 2, "scst.max_len": 8}))
    (record,) = result["history"]
    assert torch.isfinite(torch.tensor(record["loss"]))
    assert 0.0 <= record["train_reward"] <= 10.0  # mean CIDEr-D of the samples (CIDEr-D is at most 10)
    xe = load_checkpoint(tmp_path / "xe" / "last.pt")
    scst = load_checkpoint(tmp_path / "scst" / "last.pt")
    assert scst["vocab"] == xe["vocab"] and scst["model_args"] == xe["model_args"]
    assert not all(torch.equal(xe["state_dict"][k], scst["state_dict"][k]) for k in xe["state_dict"])


@pytest.mark.slow
def test_killed_before_final_last_checkpoint_resumes_to_the_same_outputs(toy_data, tiny, tmp_path, monkeypatch):
    """Killed right after the final last.pt, a rerun once reported success with the previous epoch's averaged.pt
    and history: now last.pt is written last, as the epoch's commit, so every output is already complete."""
    from pathlib import Path

    import common.trainer

    whole = train(None, tiny(toy_data, tmp_path / "whole", epochs=2))
    save = common.trainer.save_checkpoint

    def killed_at_final_last(checkpoint, path):
        save(checkpoint, path)
        if Path(path).name == "last.pt" and checkpoint["epoch"] == 2:
            raise KeyboardInterrupt  # as SIGKILL would, right after the final last.pt

    monkeypatch.setattr(common.trainer, "save_checkpoint", killed_at_final_last)
    with pytest.raises(KeyboardInterrupt):
        train(None, tiny(toy_data, tmp_path / "parts", epochs=2))
    monkeypatch.setattr(common.trainer, "save_checkpoint", save)
    resumed = train(None, tiny(toy_data, tmp_path / "parts", epochs=2))
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2
    assert (tmp_path / "parts" / "history.jsonl").read_text().count("\n") == 2
    for name in ("last.pt", "averaged.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "whole" / name)["state_dict"]
        b = load_checkpoint(tmp_path / "parts" / name)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [r["val_cider_d"] for r in resumed["history"]] == [r["val_cider_d"] for r in whole["history"]]
    assert not [p.name for p in (tmp_path / "parts").iterdir() if ".tmp" in p.name]


def test_stores_of_one_run_come_from_one_encoder(toy_data, tiny, tmp_path):
    from tests.captioning.conftest import write_split

    other_store, other_caps = write_split(tmp_path, "other", 8, seed=2, encoder="other")
    mixed = {**tiny(toy_data, tmp_path / "mixed"), "features.expect_encoder": None,
             "data.val_features": str(other_store), "data.val_captions": str(other_caps)}
    with pytest.raises(ValueError, match="other.h5: features made differently from the training store.*encoder"):
        train(None, mixed)
    assert not (tmp_path / "mixed" / "config.yaml").exists()
    # SCST (train.init) from a captioner trained on the toy encoder's features refuses another encoder's stores
    train(None, tiny(toy_data, tmp_path / "xe", epochs=1))
    other_train, other_train_caps = write_split(tmp_path, "other_train", 24, seed=1, encoder="other")
    scst = {**tiny(toy_data, tmp_path / "scst"), "features.expect_encoder": None, "train.mode": "scst",
            "train.init": str(tmp_path / "xe" / "last.pt"), "data.train_features": str(other_train),
            "data.train_captions": str(other_train_caps), "data.val_features": str(other_store),
            "data.val_captions": str(other_caps)}
    with pytest.raises(ValueError, match=r"other_train.h5: features made differently from those .*last.pt was "
                                         r"trained on \(encoder: 'toy' vs 'other'\)"):
        train(None, scst)
