"""Shared fixtures, and the rule that a test may skip only for want of the real data.

Real data for tests lives beside a checkout, in ``../shared/data`` (real Clotho clips and caption tables); the
environment variable ``AACTK_SHARED_DATA`` moves it. To run the suite as in a fresh clone without that folder::

    AACTK_SHARED_DATA=/nonexistent python -m pytest

- ``clotho_mini``: a folder in the Clotho-mini layout (``audio/*.wav``, ``clotho_captions_mini.csv``). The real
  one where present, else one generated once per session with the built-in synthetic corpus: 7 clips of 15.7-29.5 s,
  44.1 kHz mono 16-bit, file names with spaces, 5 captions each, and ``synth_metadata.json`` (file name -> duration
  and event types) giving the known properties of each clip. Tests never fail or skip for want of the real one.
- ``real_captions``: the folder of real caption tables (Clotho v1, AudioCaps v2), for the few tests whose point is
  the real text. Where it is absent they skip with a reason starting with :data:`REAL_DATA_SKIP`.
  ``real_captions_if_any`` is that folder or None, for tests that use real text where present and generated
  text otherwise (the caption metrics, see ``tests/eval/conftest.py``).

- ``reference_dir``: the official reference implementations (``shared/reference`` beside the checkout, or
  ``$AACTK_REFERENCE``) that parity tests compare against; where absent they skip with a reason starting with
  :data:`REFERENCE_SKIP`.

- ``smollm2_tokenizer``, ``tiny_lm`` (a 2-layer random Llama with SmolLM2's real tokenizer and chat template) and
  ``lm_cache``: language models for the prefix-LM captioners and keyword-to-caption, all offline.

The skip rule: any other skip (a missing package, a missing tool, a test skipping itself) fails the run, so that
``python -m pytest`` cannot pass by silently not testing. The offending tests are listed at the end of the report.
"""
from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]  # tests/test_skip_rule.py runs the rule on a throw-away suite

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "AACTK_SHARED_DATA"
REAL_DATA_SKIP = "needs the real Clotho/AudioCaps data"
REFERENCE_SKIP = "needs the reference implementations"  # official BEATs / LAION-CLAP code, for parity tests
ALLOWED_SKIPS = (REAL_DATA_SKIP, REFERENCE_SKIP)  # the only skip reasons that do not fail the run
REFERENCE_ENV = "AACTK_REFERENCE"

MINI_DURATIONS = (15.7, 29.5, 17.3, 24.1, 19.0, 21.6, 27.2)  # seconds, the range of the real clotho_mini
MINI_SAMPLE_RATE = 44100


def shared_data_dir() -> Path:
    """``$AACTK_SHARED_DATA`` if set, else ``shared/data`` beside the checkout."""
    return Path(os.environ.get(SHARED_DATA_ENV) or REPO.parent / "shared" / "data")


# --- data fixtures ----------------------------------------------------------------------------------------------

def make_clotho_mini(out: Path, seed: int = 0) -> Path:
    """Write a generated stand-in for the real clotho_mini under out and return out.

    Each clip is a scene of the synthetic corpus (1-3 events in its first seconds) over its background ambience,
    lengthened to a fixed duration; its five captions come from the corpus' caption grammar.
    """
    from corpus.synth import caption_scene, render_scene, sample_scene
    from corpus.synth.corpus import write_wav

    (out / "audio").mkdir(parents=True)
    rows, meta = [], {}
    for index, duration in enumerate(MINI_DURATIONS):
        scene_rng, audio_rng, caption_rng = (np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, s)))
                                             for s in range(3))
        scene = sample_scene(scene_rng)
        scene["duration"] = duration  # the events stay where they are; the background runs on
        for ev in scene["events"]:
            ev["spans_clip"] = bool(ev["offset"] - ev["onset"] >= 0.8 * duration)
        types = [ev["type"] for ev in scene["events"]]
        name = f"synth {index + 1:02d} {' and '.join(types)}.wav"
        write_wav(out / "audio" / name, render_scene(audio_rng, scene, MINI_SAMPLE_RATE), MINI_SAMPLE_RATE)
        rows.append([name, *caption_scene(scene, caption_rng)])
        meta[name] = {"duration": duration, "sample_rate": MINI_SAMPLE_RATE, "events": types}
    with open(out / "clotho_captions_mini.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["file_name"] + [f"caption_{i}" for i in range(1, 6)], *rows])
    (out / "synth_metadata.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def clotho_mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real clotho_mini folder where present, else a generated one (see the module docstring)."""
    real = shared_data_dir() / "clotho_mini"
    if real.is_dir():
        return real
    return make_clotho_mini(tmp_path_factory.mktemp("clotho_mini"))


@pytest.fixture(scope="session")
def real_captions_if_any() -> Path | None:
    """The real caption tables' folder, or None where absent: for tests that fall back to generated text."""
    folder = shared_data_dir() / "captions"
    return folder if folder.is_dir() else None


@pytest.fixture(scope="session")
def real_captions(real_captions_if_any: Path | None) -> Path:
    """The real caption tables (``clotho_v1_captions_*.csv``, ``audiocaps_v2_*.csv``); skips where absent."""
    if real_captions_if_any is None:
        pytest.skip(f"{REAL_DATA_SKIP}: no caption tables at {shared_data_dir() / 'captions'} (a folder "
                    f"'shared/data' beside the checkout, or set {SHARED_DATA_ENV})")
    return real_captions_if_any


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference implementations (``beats/``, ``laion_clap/``) beside the checkout (``shared/reference``, or
    ``$AACTK_REFERENCE``), for parity tests; skips where absent with a reason starting :data:`REFERENCE_SKIP`."""
    folder = Path(os.environ.get(REFERENCE_ENV) or REPO.parent / "shared" / "reference")
    if not folder.is_dir():
        pytest.skip(f"{REFERENCE_SKIP}: none at {folder} (a folder 'shared/reference' beside the checkout, or set "
                    f"{REFERENCE_ENV})")
    return folder


def import_laion_clap(reference_dir: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """LAION-CLAP's ``model`` and ``htsat`` modules from the reference folder, as package ``laion_clap``.

    Stubbed while importing: ``torchvision`` (``utils`` imports it only for ``FrozenBatchNorm2d``) and
    ``laion_clap.timm_model`` (``model`` imports it for image towers; the file is not in the reference). The
    transformers names the model imports are imported first: transformers would look for the stubbed torchvision.
    """
    import torch

    if not (reference_dir / "laion_clap" / "model.py").is_file():
        pytest.fail(f"LAION-CLAP's code is not in {reference_dir / 'laion_clap'} (the reference folder is incomplete)")
    from transformers import BartModel, BertModel, RobertaModel  # noqa: F401
    from transformers.tokenization_utils_base import BatchEncoding  # noqa: F401

    timm = types.ModuleType("laion_clap.timm_model")
    timm.TimmModel = None
    stubs = {"laion_clap.timm_model": timm}
    if importlib.util.find_spec("torchvision") is None:
        misc = types.ModuleType("torchvision.ops.misc")
        misc.FrozenBatchNorm2d = torch.nn.BatchNorm2d
        stubs.update({"torchvision": types.ModuleType("torchvision"),
                      "torchvision.ops": types.ModuleType("torchvision.ops"), "torchvision.ops.misc": misc})
    sys.path.insert(0, str(reference_dir))
    sys.modules.update(stubs)
    try:
        return importlib.import_module("laion_clap.model"), importlib.import_module("laion_clap.htsat")
    finally:
        sys.path.remove(str(reference_dir))
        for name in stubs:
            sys.modules.pop(name, None)


# --- the skip rule ----------------------------------------------------------------------------------------------

# --- a full disk ------------------------------------------------------------------------------------------------

class SmallDisk:
    """A real file system of a few MB (tmpfs) at ``path``; :meth:`fill` takes all but ``leave`` bytes of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self, leave: int = 0) -> None:
        import shutil
        self.filler.unlink(missing_ok=True)
        free = shutil.disk_usage(self.path).free
        with open(self.filler, "wb") as f:
            try:
                f.write(b"\0" * max(free - leave, 0))
                f.flush()
            except OSError:  # tmpfs rounds to pages: full is full
                pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture()
def small_disk(tmp_path) -> SmallDisk:
    """An 8 MB tmpfs mounted for one test (the suite runs as root, as CI does), unmounted after it."""
    import subprocess
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.fail(f"a full-disk test needs to mount a small tmpfs (run as root): {done.stderr.strip()}")
    yield SmallDisk(mount)
    subprocess.run(["umount", "-l", str(mount)], check=False)


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped test or module gave, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


class SkipRule:
    """Collects skips whose reason is not one of :data:`ALLOWED_SKIPS` and fails the run over them."""

    def __init__(self) -> None:
        self.offending: list[tuple[str, str]] = []  # (node id, reason)

    def _check(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not reason.startswith(ALLOWED_SKIPS):
                self.offending.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._check(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._check(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.offending and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.offending:
            terminalreporter.section("skips that fail the run", sep="=", red=True, bold=True)
            terminalreporter.line(f"Only a skip whose reason starts with one of {ALLOWED_SKIPS} is allowed; "
                                  f"{len(self.offending)} other skip(s):")
            for nodeid, reason in self.offending:
                terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
            terminalreporter.stats["disallowed skip(s)"] = list(self.offending)  # counted in the last line


@pytest.fixture(autouse=True)
def _device_audit(request: pytest.FixtureRequest):
    """For tests marked ``device_audit``: the model, loss and decoding code they run makes every tensor where the
    model is (``device=``), the device mistakes a CPU-only machine would otherwise never see."""
    if request.node.get_closest_marker("device_audit") is None:
        yield
        return
    from tests.device_audit import DeviceAudit

    audit = DeviceAudit()
    with audit:
        yield
    assert not audit.found, "tensors made without device= (they land on the CPU whatever the model's device): " + \
        ", ".join(f"torch.{factory} at {where}" for where, factory in sorted(audit.found))


def gpu_selected(config: pytest.Config) -> bool:
    """Whether ``-m`` asks for the GPU tests: an expression true for a test marked ``gpu`` and false for an unmarked
    one (``-m gpu``, ``-m "gpu and not slow"``; not ``-m "not slow"``)."""
    from _pytest.mark.expression import Expression

    if not config.option.markexpr:
        return False
    expression = Expression.compile(config.option.markexpr)
    return expression.evaluate(lambda name, **_: name == "gpu") and not expression.evaluate(lambda name, **_: False)


def pytest_configure(config: pytest.Config) -> None:
    if gpu_selected(config):
        import torch

        if not torch.cuda.is_available() and os.environ.get("AACTK_GPU_SUITE_DEVICE") != "cpu":  # cpu: a dry run
            pytest.exit(f"-m gpu: no CUDA GPU here (torch {torch.__version__}, built for "
                        f"{'CUDA ' + torch.version.cuda if torch.version.cuda else 'the CPU only'}): run the GPU tests "
                        "on a machine with one, with a CUDA build of torch", returncode=pytest.ExitCode.USAGE_ERROR)
    config.pluginmanager.register(SkipRule(), "aactk-skip-rule")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker (and per command a test runs): the
        os.environ["OMP_NUM_THREADS"] = "1"     # workers share the machine's cores, and small models gain nothing
        os.environ["MKL_NUM_THREADS"] = "1"     # from a second thread


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests first, the recipes' (minutes each) before them: with two workers, the longest start at once
    instead of ending the run alone. The GPU tests (``tests/gpu``, marked ``gpu``) are left out of the run unless
    ``-m`` selects them (``python -m pytest -m gpu``; :func:`pytest_configure` stops at once without a GPU)."""
    if not gpu_selected(config):
        gpu = [item for item in items if item.get_closest_marker("gpu")]
        if gpu:
            config.hook.pytest_deselected(items=gpu)
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, "tests/recipes/" not in item.nodeid))


# --- language models (prefix-LM captioners, keyword-to-caption) ------------------------------------------------------------

@pytest.fixture(scope="session")
def lm_cache(tmp_path_factory) -> Path:
    """A cache folder for converted LMs, shared by the tests of one run."""
    return tmp_path_factory.mktemp("lm_cache")


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's tokenizer (with its chat template), read from the packaged GGUF file."""
    from transformers import AutoTokenizer

    from common.lm import _packaged_gguf

    gguf = _packaged_gguf("smollm2")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def save_tiny_lm(folder: Path, tokenizer, seed: int) -> Path:
    """A 2-layer random Llama (Llama-3 / SmolLM2 architecture) with SmolLM2's tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, smollm2_tokenizer) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"), smollm2_tokenizer, seed=0)


# The tiny retrieval corpus and its trained bi-encoder, shared by every test folder that needs them (one session
# instance: the retrieval, feature and server tests train it once).
@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    """6 kinds of sound; train: 8 clips per kind (144 pairs), val: 3 per kind (18 clips, 54 captions)."""
    from tests.retrieval.conftest import make_corpus

    return make_corpus(tmp_path_factory.mktemp("tiny_corpus"), {"train": 8, "val": 3})


@pytest.fixture(scope="session")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    """Experiment folder of a 4-epoch run on the tiny corpus (best.pt, last.pt, history)."""
    from retrieval.train import train
    from tests.retrieval.conftest import _tiny_settings

    exp = tmp_path_factory.mktemp("train") / "exp"
    train(None, _tiny_settings(tiny_corpus, exp, **{"train.epochs": 4}))
    return exp
