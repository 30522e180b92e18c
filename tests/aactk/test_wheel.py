"""The package as a user installs it: the wheel, with the core dependencies only (no extra), in a fresh virtual
environment, captions a clip through the API and through ``aactk caption`` as the source tree does."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aactk
from captioning.bundle import make_bundle
from tests.captioning.test_infer import models  # noqa: F401 - the random encoder and captioners on Clotho-mini

REPO = Path(__file__).resolve().parents[2]
EXTRAS = ("peft", "gguf", "fastapi", "uvicorn", "onnxruntime", "onnx", "pytest", "playwright")  # none in the core
API = """
import importlib.util, json, sys
import aactk
rows = aactk.Captioner.load(sys.argv[1]).caption(sys.argv[2])
print(json.dumps({"rows": rows, "aactk": aactk.__file__,
                  "extras": [m for m in sys.argv[3].split(",") if importlib.util.find_spec(m) is not None]}))
"""


def _run(*command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_with_the_core_only_captions_through_the_api_and_the_command(models, tmp_path):  # noqa: F811
    bundle = tmp_path / "bundle.pt"
    make_bundle(str(models["encoder"]), f"{models['a']},{models['b']}", str(bundle))
    clip = sorted(Path(models["audio"]).glob("*.wav"))[0]
    expected = aactk.Captioner.load(bundle).caption(clip)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO), "-w", str(tmp_path / "dist"),
         cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("aactk-*.whl"))
    venv = tmp_path / "venv"
    try:
        _run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
        _run(str(venv / "bin" / "pip"), "install", "--quiet", str(wheel), cwd=tmp_path, timeout=1200)
        # outside the source tree, so that only the installed package can be imported
        api = json.loads(_run(str(venv / "bin" / "python"), "-c", API, str(bundle), str(clip), ",".join(EXTRAS),
                              cwd=tmp_path).stdout)
        assert Path(api["aactk"]).is_relative_to(venv) and api["extras"] == []
        assert [(r["audio_id"], r["caption"]) for r in api["rows"]] == [(clip.name, expected[0]["caption"])]
        assert api["rows"][0]["score"] == pytest.approx(expected[0]["score"], abs=1e-4)
        _run(str(venv / "bin" / "aactk"), "caption", str(clip), "--bundle", str(bundle), "--out",
             str(tmp_path / "predictions.json"), "--progress", "False", cwd=tmp_path)
        written = json.loads((tmp_path / "predictions.json").read_text())
        assert [(r["audio_id"], r["caption"]) for r in written] == [(clip.name, expected[0]["caption"])]
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 2 GB
