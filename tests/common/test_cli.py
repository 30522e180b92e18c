"""Commands end in one line naming the file and the reason (traceback only with --debug); text stays text."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpoint import load_checkpoint
from common.cli import describe_error, quote_text_args, run
from common.io import device_of

REPO = Path(__file__).resolve().parents[2]


def command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, says", [
    (("retrieval.evaluate", "--checkpoints", "nowhere.pt", "--manifest", "nowhere"), "nowhere/wav.csv: missing"),
    (("captioning.train", "--train.epoch", "3"), "unknown setting 'train.epoch'"),
    (("retrieval.train", "--data.train_manifest", "x", "--train.lr", "fast"), "'train.lr' expects float"),
    (("captioning.decode", "--checkpoints", "junk.yaml", "--features", "x.h5", "--out", "p.json"),
     "junk.yaml: not a readable checkpoint"),
])
def test_errors_are_one_line_without_traceback(args, says, tmp_path):
    (tmp_path / "junk.yaml").write_text("not a checkpoint")
    done = command(*(str(tmp_path / a) if a == "junk.yaml" else a for a in args))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith(f"{args[0]}: error: "), done.stderr
    assert "Traceback" not in done.stderr


def test_debug_shows_the_traceback():
    done = command("retrieval.evaluate", "--checkpoints", "nowhere.pt", "--manifest", "nowhere", "--debug")
    assert done.returncode == 1 and "Traceback" in done.stderr and "nowhere/wav.csv: missing" in done.stderr
    done = command("retrieval.evaluate", "--checkpoints", "nowhere.pt", "--manifest", "nowhere",
                   env={"AACTK_DEBUG": "1"})
    assert "Traceback" in done.stderr


def test_describe_error():
    assert describe_error(KeyError("unknown setting 'x'")) == "unknown setting 'x'"  # no repr quotes
    assert describe_error(ValueError("a.pt: bad\nsecond line")) == "a.pt: bad second line"
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out")
    assert describe_error(full) == f"/data/out: No space left on {device_of('/data/out')}"
    assert "ZeroDivisionError" in describe_error(ZeroDivisionError("x")) and "--debug" in describe_error(
        ZeroDivisionError("x"))


def test_text_arguments_stay_text():
    def echo(query: str = "", top: int = 1):
        return query, top

    for text in ("None", "42", "True", "[1,2]", "dog's bark", 'a "quoted" bark', "  "):
        for args in (["--query", text], [f"--query={text}"]):
            assert run_quiet(echo, args) == (text, 1)
    assert run_quiet(echo, ["--query", "x", "--top", "3"]) == ("x", 3)  # other arguments keep fire's parsing
    long = " ".join(["dog"] * 100_000)  # fire's own parser runs out of memory on this
    assert run_quiet(echo, ["--query", long])[0] == long


def run_quiet(fn, args):
    import fire

    return fire.Fire(fn, command=quote_text_args(args, ["query"]), name="t")


def test_run_exit_codes(capsys):
    def fails():
        raise ValueError("x.h5: corrupt")

    with pytest.raises(SystemExit) as stop:
        run(fails, "demo", argv=[])
    assert stop.value.code == 1 and capsys.readouterr().err == "demo: error: x.h5: corrupt\n"

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        run(interrupted, "demo", argv=[])
    assert stop.value.code == 130


def test_pickled_code_is_refused_without_torch_advice(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo never",))

    path = tmp_path / "evil.pt"
    torch.save({"kind": "captioner", "state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    assert "evil.pt: refused" in str(err.value) and "weights_only" not in str(err.value)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="evil.pt: not a readable checkpoint .truncated"):
        load_checkpoint(path)


def test_bool_options_read_true_and_false_as_typed(capsys):
    """fire alone passes `--progress false` on as the text 'false', which is truthy."""
    seen = []

    def command(path: str = "", progress: bool = True, approximate: bool | None = None, top: int = 1):
        seen.append((progress, approximate, top))

    for argv, expect in ((["--progress", "false"], (False, None, 1)),
                         (["--progress=No", "--top", "2"], (False, None, 2)),
                         (["--progress", "TRUE", "--approximate", "0"], (True, False, 1)),
                         (["--progress", "--top", "3"], (True, None, 3)), (["--approximate=yes"], (True, True, 1)),
                         (["x.wav", "--progress", "false"], (False, None, 1))):
        seen.clear()
        run(command, "demo", argv=argv)
        assert seen == [expect], argv
    subcommands = {"search": command}
    seen.clear()
    run(subcommands, "demo", argv=["search", "--approximate", "false"])
    assert seen == [(True, False, 1)]
    with pytest.raises(SystemExit) as stop:
        run(command, "demo", argv=["--progress", "maybe"])
    error = capsys.readouterr().err
    assert stop.value.code == 1 and "Invalid --progress. (expected true or false, found 'maybe')" in error
