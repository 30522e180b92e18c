"""The README and docs/ cannot rot: the README's Python example and its caption command run (on tiny models, their
paths swapped in), and every command the docs show names a command that exists, with options its module knows."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aactk.cli import COMMANDS
from tests.common.test_help import COMMANDS as COMMAND_MODULES
from tests.serve.conftest import bundle_file, library  # noqa: F401 - a tiny bundle and a folder of clips

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE = re.compile(r"```\w*\n(.*?)```|`([^`\n]+)`", re.S)  # fenced blocks and inline code
COMMAND = re.compile(r"(?:python -m ([\w.]+)|aactk ((?:train|eval) \w+|[\w-]+))(.*)")
SHARED_OPTIONS = {"help", "config", "debug"}  # every command's (common.cli)


def code_of(path: Path) -> list[str]:
    """The lines of code a document shows, continuation lines joined."""
    spans = [m.group(1) or m.group(2) for m in CODE.finditer(path.read_text(encoding="utf-8"))]
    return [line for span in spans for line in span.replace("\\\n", " ").splitlines()]


def module_source(module: str) -> str:
    path = REPO.joinpath(*module.split("."))
    return (path / "__main__.py" if path.is_dir() else path.with_suffix(".py")).read_text(encoding="utf-8")


def test_every_command_the_docs_show_exists_with_its_options():
    shown = 0
    for doc in DOCS:
        for line in code_of(doc):
            for match in COMMAND.finditer(line):
                module = match.group(1) or COMMANDS.get(match.group(2), (None,))[0]
                if match.group(2) and module is None:
                    assert match.group(2) in ("--help",), f"{doc.name}: no command 'aactk {match.group(2)}'"
                    continue
                if module == "pytest":
                    continue
                assert module in COMMAND_MODULES, f"{doc.name}: no command module {module} ({line.strip()})"
                source = module_source(module)
                for option in re.findall(r"(?<![\w-])--([\w][\w.-]*)", match.group(3)):
                    key = option.split(".")[0].replace("-", "_")
                    # a renamed or removed option vanishes from its module's source
                    assert key in SHARED_OPTIONS or key in source, f"{doc.name}: {module} has no option --{option}"
                shown += 1
    assert shown >= 40, shown  # the docs show the commands, and this test finds them


def readme_block(language: str, which: int = 0) -> str:
    """The README's first (or ``which``) fenced block of ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)[which]


@pytest.mark.slow
def test_the_readme_examples_run(bundle_file, library, trained, tmp_path):  # noqa: F811
    clips = library / "tones"
    paths = {"BUNDLE": bundle_file, "RETRIEVAL": trained / "best.pt", "CLIPS": clips}
    code = readme_block("python")
    for name, value in paths.items():
        code, n = re.subn(rf'^{name} = "[^"]*"', f"{name} = {str(value)!r}", code, flags=re.M)
        assert n == 1, name
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    assert len(printed) == 5 and printed[0].split()[0].endswith(".wav") and printed[3].startswith("[(")
    caption = next(line for line in readme_block("bash", -1).splitlines() if line.startswith("aactk caption"))
    caption = caption.replace("data/synth/raw/clotho_audio_evaluation", str(clips)).replace(
        "exp/synth/serve/caption_bundle.pt", str(bundle_file))
    done = subprocess.run([str(Path(sys.executable).with_name("aactk")), *caption.split()[1:], "--progress", "False"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "predictions.json").read_text())
    assert len(rows) == len(list(clips.glob("*.wav"))) and all(r["caption"] for r in rows)
