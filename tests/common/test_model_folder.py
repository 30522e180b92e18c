"""A model folder that asks to run its own Python code is refused by every loader, on a terminal or not, and its
code never runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

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
