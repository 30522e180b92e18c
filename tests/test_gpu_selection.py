"""GPU tests are never part of the default run (deselected, not skipped), run with ``-m gpu``, and ``-m gpu`` on a
machine without a CUDA GPU stops at once with a message saying so (tests/conftest.py)."""
from pathlib import Path

import pytest
import torch

CONFTEST = Path(__file__).with_name("conftest.py")
SUITE = """
import pytest

@pytest.mark.gpu
def test_on_the_gpu():
    pass

@pytest.mark.slow
def test_slow():
    pass

def test_plain():
    pass
"""


@pytest.fixture()
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n    slow: long\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


@pytest.mark.parametrize("args, passed", [((), 2), (("-m", "not slow"), 1), (("-m", "not gpu"), 2)])
def test_the_gpu_tests_are_deselected_unless_asked_for(suite, args, passed):
    result = suite.runpytest(*args)
    result.assert_outcomes(passed=passed, deselected=3 - passed)
    result.stdout.no_fnmatch_line("*test_on_the_gpu*PASSED*")


def test_asking_for_them_without_a_gpu_stops_at_once(suite, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = suite.runpytest("-m", "gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = result.stdout.str() + result.stderr.str()
    assert "-m gpu: no CUDA GPU here" in said and "run the GPU tests on a machine with one" in said, said
    assert "passed" not in said


def test_with_a_gpu_they_run(suite, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    suite.runpytest("-m", "gpu").assert_outcomes(passed=1, deselected=2)
