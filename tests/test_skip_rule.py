"""The suite's skip rule (tests/conftest.py), run on throw-away suites: only a skip for want of the real data or
of the reference implementations may pass."""
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

ALLOWED = """
import pytest

def test_needs_real_data(real_captions):
    pass

def test_needs_reference_code(reference_dir):
    pass

def test_says_so_itself():
    pytest.skip("needs the real Clotho/AudioCaps data: a clip only the real corpus has")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False

def test_passes():
    pass
"""


@pytest.fixture()
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throw-away folder with a copy of tests/conftest.py, where the real data is absent."""
    monkeypatch.setenv("AACTK_SHARED_DATA", str(pytester.path / "absent"))
    monkeypatch.setenv("AACTK_REFERENCE", str(pytester.path / "absent"))
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    return pytester


def test_real_data_skips_and_xfails_pass(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_allowed=ALLOWED)
    result = suite.runpytest("-ra")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*skips that fail the run*")


@pytest.mark.parametrize("body, reason", [
    ("import pytest\n\ndef test_a():\n    pytest.skip('flaky here')\n", "flaky here"),
    ("import pytest\n\n@pytest.mark.skip\ndef test_a():\n    pass\n", "unconditional skip"),
    ("import pytest, sys\n\n@pytest.mark.skipif(sys.maxsize > 0, reason='no GPU')\ndef test_a():\n    pass\n",
     "no GPU"),
    ("import pytest\n\nnot_there = pytest.importorskip('a_module_that_is_not_installed')\n\ndef test_a():\n    pass\n",
     "could not import 'a_module_that_is_not_installed'*"),
])
def test_any_other_skip_fails_the_run_and_is_listed(suite: pytest.Pytester, body: str, reason: str) -> None:
    suite.makepyfile(test_allowed=ALLOWED, test_other=body)
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes()["passed"] == 1 and "failed" not in result.parseoutcomes()
    result.stdout.fnmatch_lines(["*= skips that fail the run =*", "*1 other skip(s)*",
                                 f"SKIPPED test_other.py*: {reason}", "*1 disallowed skip(s)*"])
    result.stdout.no_fnmatch_line("SKIPPED test_allowed.py*")


def test_failures_keep_their_exit_status(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_mixed="import pytest\n\ndef test_fails():\n    assert False\n\n"
                                "def test_skips():\n    pytest.skip('later')\n")
    result = suite.runpytest()
    result.assert_outcomes(failed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED test_mixed.py::test_skips: later"])


def test_clotho_mini_is_generated_where_the_real_one_is_absent(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_mini="""
        import csv, json
        import soundfile as sf

        def test_layout(clotho_mini):
            wavs = sorted((clotho_mini / "audio").glob("*.wav"))
            with open(clotho_mini / "clotho_captions_mini.csv", encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            assert list(rows[0]) == ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
            assert sorted(r["file_name"] for r in rows) == [w.name for w in wavs] and len(wavs) == 7
            assert all(" " in w.name for w in wavs) and all(all(r.values()) for r in rows)
            meta = json.loads((clotho_mini / "synth_metadata.json").read_text())
            for w in wavs:
                info = sf.info(str(w))
                assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
                assert 15.0 <= info.duration <= 30.0 and info.frames == round(meta[w.name]["duration"] * 44100)
    """)
    result = suite.runpytest_subprocess()  # in process, numpy.fft first imported here could not be imported again
    result.assert_outcomes(passed=1)
