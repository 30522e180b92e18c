"""Paired bootstrap comparison of two score files."""
import json

import numpy as np
import pytest

from eval.compare import compare, format_comparison, paired_bootstrap


def test_paired_bootstrap_intervals():
    a = np.random.default_rng(0).uniform(0, 1, 200)
    same = paired_bootstrap(a, a, samples=500)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and same["p_better"] == 0.0
    up = paired_bootstrap(a, a + 0.1, samples=500)
    assert up["low"] == pytest.approx(0.1) and up["high"] == pytest.approx(0.1) and up["p_better"] == 1.0
    noisy = a + np.random.default_rng(1).normal(0.02, 0.3, 200)
    r = paired_bootstrap(a, noisy, samples=3000)
    assert r["low"] < r["difference"] < r["high"] and r["low"] < 0 < r["high"]  # too noisy to call
    assert r["high"] - r["low"] == pytest.approx(2 * 1.96 * 0.3 / np.sqrt(200), rel=0.2)  # about the normal width
    assert paired_bootstrap(a, noisy, samples=3000) == r  # seeded
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, a[:10])


def _scores(path, per_clip: dict[str, float], corpus: float | None = None):
    path.write_text(json.dumps({"corpus": {"cider_d": np.mean(list(per_clip.values())) if corpus is None else corpus,
                                           "bleu_4": 0.1},
                                "per_clip": {k: {"cider_d": v, "bleu_4": 0.1} for k, v in per_clip.items()},
                                "unavailable": {}}))
    return str(path)


def test_compare_score_files(tmp_path):
    clips = [f"c{i}" for i in range(50)]
    a = _scores(tmp_path / "a.json", {c: 0.2 for c in clips})
    b = _scores(tmp_path / "b.json", {c: 0.2 + (0.5 if i % 2 else 0.0) for i, c in enumerate(clips)})
    result = compare(a, b, samples=1000, out=str(tmp_path / "cmp.json"))
    assert result["cider_d"]["difference"] == pytest.approx(0.25) and result["cider_d"]["low"] > 0.1
    assert json.loads((tmp_path / "cmp.json").read_text()) == result
    assert "cider_d: +0.2500" in format_comparison(result)
    with pytest.raises(ValueError, match="bleu_4: its corpus score is not a mean"):
        compare(a, b, "bleu_4")
    with pytest.raises(ValueError, match="different clips"):
        compare(a, _scores(tmp_path / "fewer.json", {c: 0.2 for c in clips[:-1]}))
    with pytest.raises(ValueError, match="odd.json: the per-clip cider_d scores average"):
        compare(a, _scores(tmp_path / "odd.json", {c: 0.2 for c in clips}, corpus=0.9))
    with pytest.raises(ValueError, match="absent.json: not a score file"):
        compare(a, str(tmp_path / "absent.json"))
