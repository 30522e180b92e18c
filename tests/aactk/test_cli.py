"""The ``aactk`` command (installed with the package): every command module under one name, each with its own
arguments and help."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aactk.cli import COMMANDS
from tests.captioning.test_infer import models  # noqa: F401 - the random encoder and captioners on Clotho-mini
from tests.common.test_help import COMMANDS as COMMAND_MODULES

AACTK = Path(sys.executable).with_name("aactk")  # the script pip installs beside the interpreter
REPO = Path(__file__).resolve().parents[2]


def aactk(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(AACTK), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_every_command_module_has_an_aactk_name_and_help_lists_them():
    assert sorted(module for module, _ in COMMANDS.values()) == sorted(m for m in COMMAND_MODULES if m != "common.cli")
    done = aactk("--help")
    assert done.returncode == 0, done.stderr
    assert all(f"  {name} " in done.stdout for name in COMMANDS), done.stdout


def test_a_command_gets_its_own_arguments_and_help(models, tmp_path):  # noqa: F811
    same = subprocess.run([sys.executable, "-m", "captioning.infer", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    help_text = aactk("caption", "--help")
    assert (help_text.stdout, help_text.stderr) == (same.stdout, same.stderr) and "--bundle" in same.stderr
    model = ["--audio-encoder", str(models["encoder"]), "--captioners", f"{models['a']},{models['b']}",
             "--progress", "False"]
    via_aactk = aactk("caption", str(models["audio"]), *model, "--out", str(tmp_path / "a.json"))
    assert via_aactk.returncode == 0, via_aactk.stderr
    direct = subprocess.run([sys.executable, "-m", "captioning.infer", str(models["audio"]), *model, "--out",
                             str(tmp_path / "b.json")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    assert len(json.loads((tmp_path / "a.json").read_text())) == 7


def test_an_unknown_or_unfinished_command_names_the_choices():
    done = aactk("train")
    assert done.returncode == 2 and "train tagger, train retrieval, train captioner, train lm" in done.stderr
    done = aactk("captoin", "x.wav")
    assert done.returncode == 2 and "unknown command 'captoin'" in done.stderr and "caption," in done.stderr
    assert aactk().returncode == 2
