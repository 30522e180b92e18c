"""``--help`` is answered from the command's source, before torch is imported, and says what the command itself says."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import HELP_FROM_SOURCE_ENV

REPO = Path(__file__).resolve().parents[2]
COMMANDS = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__main__")
    for package in ("common", "corpus", "features", "tagging", "retrieval", "captioning", "eval", "serve")
    for path in (REPO / package).rglob("*.py") if "help_from_source(__name__, __file__)" in path.read_text())
SUB_COMMANDS = ["features.extract merge", "retrieval.index build", "retrieval.search rank", "corpus.prepare clotho"]
HEAVY = ("torch", "transformers", "h5py", "fastapi", "matplotlib")  # each a second or more to import


def _help(command: str, from_source: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", *command.split(), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, HELP_FROM_SOURCE_ENV: "1" if from_source else "0"})


def test_every_command_answers_help_from_its_source():
    assert len(COMMANDS) >= 28 and "retrieval.train" in COMMANDS and "serve" in COMMANDS, COMMANDS


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS + SUB_COMMANDS)
def test_help_without_heavy_imports_equals_the_commands_own(command):
    fast, full = _help(command, from_source=True), _help(command, from_source=False)
    assert fast.returncode == full.returncode == 0, fast.stderr[-2000:] + full.stderr[-2000:]
    imported = set(re.findall(r"\|\s+(\w+)$", fast.stderr, re.M))  # top-level modules imported
    assert not imported & set(HEAVY), imported & set(HEAVY)
    text = [done.stdout + "".join(line for line in done.stderr.splitlines(keepends=True)
                                  if not line.startswith("import time:")) for done in (fast, full)]
    assert text[0] == text[1] and command.split()[0] in text[0]
