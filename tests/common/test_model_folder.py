"""A model folder that asks to run its own Python code, or whose pickled weights hold Python objects, is refused by
every loader, on a terminal or not, and its code never runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.model_folder import refuse_custom_code
from common.text_encoder import TextEncoder, resolve_text_encoder

MARKER_CODE = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('the folder ran code')\n"


def _with_custom_code(source: Path, out: Path, config: str = "config.json") -> Path:
    """A copy of a model folder whose ``config`` names a class in a Python file of the folder (the file leaves a
    marker when imported)."""
    shutil.copytree(source, out)
    data = json.loads((out / config).read_text(encoding="utf-8"))
    data["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel",
                        "AutoModelForCausalLM": "custom.CustomModel", "AutoTokenizer": ["custom.CustomTokenizer", None]}
    (out / config).write_text(json.dumps(data), encoding="utf-8")
    (out / "custom.py").write_text(MARKER_CODE, encoding="utf-8")
    return out


def test_text_encoder_and_prompt_encoder_folders(tmp_path):
    for config in ("config.json", "tokenizer_config.json"):
        folder = _with_custom_code(Path(resolve_text_encoder("minilm")), tmp_path / config, config)
        for pretrained in (True, False):  # a retrieval model's own text encoder, and one whose weights come later
            with pytest.raises(ValueError, match=rf"{folder / config}: .*asks to run Python code.*refused"):
                TextEncoder(str(folder), pretrained=pretrained)
        assert not (folder / "RAN").exists()


def test_language_model_and_keyword_generator_folders(tiny_lm, tmp_path):
    from common.lm import load_lm
    from corpus.keywords import Generator

    folder = _with_custom_code(tiny_lm, tmp_path / "lm")
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}: .*asks to run Python code"):
        load_lm(str(folder))
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}: .*asks to run Python code"):
        Generator(str(folder))
    assert not (folder / "RAN").exists()


def test_sentence_model_folder_with_a_module_of_its_own(tmp_path):
    from eval.semantic import sbert_sim

    folder = shutil.copytree(resolve_text_encoder("minilm"), tmp_path / "sbert")
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[-1]["type"] = "custom.Pooling"
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "custom.py").write_text(MARKER_CODE, encoding="utf-8")
    with pytest.raises(ValueError, match=r"modules.json: .*'custom.Pooling'.*refused"):
        sbert_sim(["a dog barks"], [["a dog is barking"]], model=str(folder))
    assert not (folder / "RAN").exists()


def test_a_plain_folder_passes(tiny_lm):
    refuse_custom_code(tiny_lm, "LM 'tiny'")  # no auto_map: nothing to refuse


def test_ast_folder(tmp_path):
    from features.encoders.ast import load_pretrained

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "audio-spectrogram-transformer",
                                                      "auto_map": {"AutoModel": "custom.CustomModel"}}))
    (tmp_path / "custom.py").write_text(MARKER_CODE, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'}: AST model folder .*asks to run Python code"):
        load_pretrained(str(tmp_path), {})
    assert not (tmp_path / "RAN").exists()


class Payload:
    """Unpickling an instance would import this module: what loading a model folder must never do."""


def _with_pickled_weights(folder: Path, payload: bool = True) -> Path:
    """``folder``'s weights as ``pytorch_model.bin`` instead of safetensors: its own tensors, or (``payload``) an
    object of a class of this module, as a pickle can hold."""
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({"x": Payload()} if payload else tensors, folder / "pytorch_model.bin")
    return folder


@pytest.fixture()
def tiny_bert(tmp_path):
    """A 1-layer BERT folder with MiniLM's tokenizer (safetensors weights, as save_pretrained writes them)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def _refused(path: Path, what: str) -> str:
    return rf"{path}: refused: the weights file of {what} holds Python objects \(.*Payload\)"


def test_text_and_prompt_encoder_folders_with_pickled_objects(tiny_bert):
    from captioning.models.prefix_lm import PromptEncoder

    folder = _with_pickled_weights(tiny_bert, payload=False)
    assert TextEncoder(str(folder)).dim == 16  # plain tensors in pytorch_model.bin load
    torch_bin = folder / "pytorch_model.bin"
    torch.save({"x": Payload()}, torch_bin)
    with pytest.raises(ValueError, match=_refused(torch_bin, f"text encoder '{folder}'")) as err:
        TextEncoder(str(folder))
    assert "weights_only" not in str(err.value)
    with pytest.raises(ValueError, match=_refused(torch_bin, f"text encoder '{folder}'")):
        PromptEncoder(32, 2, str(folder))
    TextEncoder(str(folder), pretrained=False)  # weights from a checkpoint: the folder's are never read
    torch_bin.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=rf"{torch_bin}: not a readable weights file of text encoder"):
        TextEncoder(str(folder))


def test_language_model_folder_with_pickled_objects(tiny_lm, tmp_path):
    from common.lm import load_lm

    folder = _with_pickled_weights(shutil.copytree(tiny_lm, tmp_path / "lm"))
    with pytest.raises(ValueError, match=_refused(folder / "pytorch_model.bin", f"LM '{folder}'")) as err:
        load_lm(str(folder))
    assert "weights_only" not in str(err.value)


def test_retrieval_train_names_the_text_encoders_weights_file(tiny_bert, tmp_path):
    folder = _with_pickled_weights(tiny_bert)
    proc = subprocess.run([sys.executable, "-m", "retrieval.train", "--data.train_manifest", str(tmp_path / "none"),
                           "--model.text_encoder.name", str(folder), "--exp_dir", str(tmp_path / "exp")],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"retrieval.train: error: {folder / 'pytorch_model.bin'}: refused: the weights file of "
                            f"text encoder '{folder}' holds Python objects"), proc.stderr
    assert "weights_only" not in proc.stderr
