"""Dry runs of the recipes faithful to the SJTU report (recipes/audiocaps, then recipes/clotho fine-tuned from it) on
the real Clotho clips of ../shared/data/clotho_mini laid out as each corpus is distributed, with tiny model sizes.
The text encoders are found by their hub names (bert-base-uncased, prajjwal1/bert-medium, roberta-base) in a
Hugging Face cache the test fills with small models, as on a user's machine."""
import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from captioning.checkpoint import load_captioner
from captioning.vocab import tokenize

from tests.recipes.test_recipes import _run, _tiny_conf

HUB_MODELS = {"bert-base-uncased": "bert", "prajjwal1/bert-medium": "bert", "roberta-base": "roberta"}


def _save_to_hub_cache(cache: Path, name: str, model, tokenizer) -> None:
    """Save a model where huggingface_hub looks for ``name`` offline: models--<org>--<name>/snapshots/<rev>/."""
    repo = cache / f"models--{name.replace('/', '--')}"
    revision = "0" * 40
    model.save_pretrained(repo / "snapshots" / revision)
    tokenizer.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """Small random BERTs (MiniLM's uncased vocabulary) and a RoBERTa (byte-level BPE over single bytes) under the
    hub names the published recipes use."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel, RobertaTokenizerFast

    from common.text_encoder import resolve_text_encoder

    cache = tmp_path_factory.mktemp("hf_cache")
    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    bert_tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    folder = cache / "roberta_tokenizer"
    folder.mkdir()
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = ["<s>", "<pad>", "</s>", "<unk>", *sorted(ByteLevel.alphabet()), "<mask>"]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    roberta_tokenizer = RobertaTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
    for name, kind in HUB_MODELS.items():
        if kind == "bert":
            model = BertModel(BertConfig(vocab_size=bert_tokenizer.vocab_size, **small))
            _save_to_hub_cache(cache / "hub", name, model, bert_tokenizer)
        else:
            model = RobertaModel(RobertaConfig(vocab_size=len(symbols), pad_token_id=1, bos_token_id=0,
                                               eos_token_id=2, max_position_embeddings=66, **small))
            _save_to_hub_cache(cache / "hub", name, model, roberta_tokenizer)
    return cache / "hub"


def _clips(clotho_mini: Path) -> dict[str, list[tuple[str, str, list[str]]]]:
    """(file in clotho_mini, name in the corpus, captions) per split: training 4 clips, validation 1, evaluation all
    7 and 3 of them again under other names (a DCASE retrieval submission names 10 clips per query)."""
    with open(clotho_mini / "clotho_captions_mini.csv", encoding="utf-8", newline="") as f:
        clips = [(row[0], row[0], row[1:]) for row in list(csv.reader(f))[1:]]
    again = [(name, f"again {name}", captions) for name, _, captions in clips[:3]]
    return {"train": clips[:4], "val": clips[4:5], "eval": clips + again}


def _fake_clotho(root: Path, clotho_mini: Path) -> Path:
    """Clotho's layout: development 4 clips, validation 1, evaluation 2 (re-split 9:1 into 4 + 1)."""
    clips = _clips(clotho_mini)
    for split, part in (("development", clips["train"]), ("validation", clips["val"]), ("evaluation", clips["eval"])):
        (root / f"clotho_audio_{split}").mkdir(parents=True)
        with open(root / f"clotho_captions_{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
            for source, name, captions in part:
                shutil.copy(clotho_mini / "audio" / source, root / f"clotho_audio_{split}" / name)
                writer.writerow([name, *captions])
    return root


def _fake_audiocaps(root: Path, clotho_mini: Path) -> tuple[Path, Path]:
    """AudioCaps' layout: caption tables (audiocap_id,youtube_id,start_time,caption) and clips named by YouTube id."""
    clips = _clips(clotho_mini)
    csv_dir, audio_dir = root / "csv", root / "audio"
    csv_dir.mkdir(parents=True)
    audio_dir.mkdir()
    cap_id = 0
    for split, part in (("train", clips["train"]), ("val", clips["val"]), ("test", clips["eval"])):
        with open(csv_dir / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
            for k, (source, _, captions) in enumerate(part):
                youtube_id = f"{split[:2]}{k:09d}"
                shutil.copy(clotho_mini / "audio" / source, audio_dir / f"{youtube_id}.wav")
                for caption in captions:
                    cap_id += 1
                    writer.writerow([cap_id, youtube_id, 30, caption])
    return csv_dir, audio_dir


def _fake_macs(root: Path, clotho_mini: Path) -> tuple[Path, Path]:
    """MACS' layout: MACS.yaml (files: filename, annotations: sentence, tags) and the TAU clips it names; its
    sentences hold a word Clotho's captions never use ("tramway")."""
    audio_dir = root / "TAU-urban-acoustic-scenes-2019-development" / "audio"
    audio_dir.mkdir(parents=True)
    files = []
    for k, (source, _, _) in enumerate(_clips(clotho_mini)["train"][:3]):
        name = f"street_traffic-milan-{k}-{k}-a.wav"
        shutil.copy(clotho_mini / "audio" / source, audio_dir / name)
        files.append({"filename": name, "annotations": [
            {"annotator_id": j, "sentence": f"a tramway passes by as people talk {j}", "tags": ["tram", "speech"]}
            for j in range(3)]})
    (root / "MACS.yaml").write_text(yaml.safe_dump({"files": files}), encoding="utf-8")
    return root / "MACS.yaml", audio_dir


@pytest.mark.slow
def test_audiocaps_then_clotho_recipes_dry_run(clotho_mini, hub_cache, tmp_path):
    env = {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    # AudioCaps pre-training: retrieval (stages 0-3), every model and named system
    caps_csv, caps_audio = _fake_audiocaps(tmp_path / "audiocaps", clotho_mini)
    _tiny_conf(tmp_path / "ac" / "conf", "audiocaps")
    proc = _run(tmp_path / "ac", "--corpus", "audiocaps", "--stop_stage", "3",
                env={**env, "AUDIOCAPS_CSV": str(caps_csv), "AUDIOCAPS_AUDIO": str(caps_audio)})
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out
    ac_exp = tmp_path / "ac" / "exp"
    for tag in ("cnn14", "cnn14_bert_medium", "cnn14_roberta", "wavegram_logmel_cnn14", "ast"):
        assert (ac_exp / f"retrieval_{tag}" / "best.pt").is_file(), tag
    assert "starts from random audio weights" in out  # no PANNS_DIR here: said, not silent
    systems = json.loads((ac_exp / "retrieval_systems" / "system4.json").read_text())
    assert len(systems["members"]) == 5

    # Clotho: re-split 9:1, each retrieval model fine-tuned from its AudioCaps twin, captioners pre-trained on MACS
    # then fine-tuned, named ensembles
    _tiny_conf(tmp_path / "cl" / "conf", "clotho")
    macs_yaml, macs_audio = _fake_macs(tmp_path / "macs", clotho_mini)
    proc = _run(tmp_path / "cl", "--corpus", "clotho",
                env={**env, "CLOTHO_ROOT": str(_fake_clotho(tmp_path / "clotho", clotho_mini)),
                     "PRETRAIN_EXP": str(ac_exp), "MACS_YAML": str(macs_yaml), "MACS_AUDIO": str(macs_audio)})
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out
    exp, data = tmp_path / "cl" / "exp", tmp_path / "cl" / "data"
    resplit = json.loads((data / "resplit.json").read_text())
    assert (len(resplit["development"]), len(resplit["validation"]), resplit["share"]) == (4, 1, 0.9)
    command = (exp / "retrieval_cnn14_roberta" / "command.sh").read_text()
    assert f"--train.init {ac_exp}/retrieval_cnn14_roberta/best.pt" in command and "--train.lr 2.0e-5" in command
    assert len(json.loads((data / "macs" / "train" / "captions.json").read_text())) == 3
    for name in ("transformer", "gru"):  # pre-trained on MACS (a vocabulary with Clotho's words), then fine-tuned
        pretrained = yaml.safe_load((exp / f"caption_{name}_pretrain" / "config.yaml").read_text())
        assert pretrained["data"]["train_captions"].endswith("macs/train"), pretrained["data"]
        finetuned = yaml.safe_load((exp / f"caption_{name}_xe" / "config.yaml").read_text())
        assert finetuned["train"]["init"] == f"{exp}/caption_{name}_pretrain/averaged.pt", finetuned["train"]
        _, vocab, _ = load_captioner(exp / f"caption_{name}_xe" / "averaged.pt")
        clotho_words = {w for caps in json.loads((data / "development" / "captions.json").read_text()).values()
                        for c in caps for w in tokenize(c)}
        assert "tramway" in vocab.words and clotho_words <= set(vocab.words), clotho_words - set(vocab.words)
    evaluation = json.loads((data / "evaluation" / "captions.json").read_text())
    for system in ("system1", "system2", "system3", "system4"):
        rows = list(csv.reader((exp / "retrieval_systems" / f"{system}.csv").open(encoding="utf-8")))
        assert rows[0] == ["caption"] + [f"fname_{k}" for k in range(1, 11)], system
        assert len(rows) - 1 == len({c for caps in evaluation.values() for c in caps})  # a row per distinct caption
        assert all(set(r[1:]) == set(evaluation) for r in rows[1:])  # 10 distinct clips: all of them here
    for system in ("system1", "system2", "system3", "ensemble_scst"):
        assert (exp / "decode" / system / "scores.json").is_file(), system
    results = (exp / "results.md").read_text()
    assert "| system3 |" in results and "| retrieval_cnn14_roberta |" in results, results
    assert os.path.getsize(exp / "results.png") > 0
