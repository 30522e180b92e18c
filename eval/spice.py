"""SPICE (Anderson et al. 2016) through the SPICE 1.0 jar shipped with pycocoevalcap.

SPICE parses captions with Stanford CoreNLP 3.6.0, whose two jars (``stanford-corenlp-3.6.0.jar`` and
``stanford-corenlp-3.6.0-models.jar``, from ``stanford-corenlp-full-2015-12-09.zip``) are not shipped with
pycocoevalcap; its own wrapper downloads them on first use. This module never downloads: it looks for the jars in
``corenlp_dir`` (argument), else in the folder named by the environment variable ``AAC_SPICE_LIB``, else in
pycocoevalcap's ``spice/lib`` folder, and raises :class:`MetricUnavailableError` saying what to do when they are
in none of these.
"""
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

from pycocoevalcap import spice as _spice_pkg

from ._coco import Scores, prepare
from ._java import require_java

SPICE_LIB_ENV = "AAC_SPICE_LIB"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
_SPICE_DIR = Path(os.path.dirname(os.path.abspath(_spice_pkg.__file__)))
_SPICE_JAR = _SPICE_DIR / "spice-1.0.jar"


class MetricUnavailableError(RuntimeError):
    """A metric cannot run on this machine; the message says why and what to do."""


def find_corenlp_dir(corenlp_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder holding both CoreNLP 3.6.0 jars, or raise :class:`MetricUnavailableError`."""
    if corenlp_dir is not None:
        places = [Path(corenlp_dir)]
    else:
        places = ([Path(os.environ[SPICE_LIB_ENV])] if os.environ.get(SPICE_LIB_ENV) else []) + [_SPICE_DIR / "lib"]
    for place in places:
        if all((place / jar).is_file() for jar in CORENLP_JARS):
            return place
    raise MetricUnavailableError(
        f"SPICE needs Stanford CoreNLP 3.6.0 ({' and '.join(CORENLP_JARS)}), not found in "
        f"{', '.join(str(p) for p in places)}. Get both jars from stanford-corenlp-full-2015-12-09.zip "
        f"(Stanford NLP) and put them in one folder, then set {SPICE_LIB_ENV} to that folder "
        f"(or copy them into pycocoevalcap's spice/lib)."
    )


def spice_unavailable_reason(corenlp_dir: str | os.PathLike | None = None) -> str | None:
    """``None`` when SPICE can run, else why not and what to do."""
    try:
        find_corenlp_dir(corenlp_dir)
        require_java("SPICE")
    except (MetricUnavailableError, RuntimeError) as err:
        return str(err)
    return None


def spice(candidates: list[str], mult_references: list[list[str]], *, tokenize: bool = True,
          corenlp_dir: str | os.PathLike | None = None, java_max_memory: str = "8G",
          timeout: float | None = None) -> Scores:
    """SPICE F-score, key ``spice``; the corpus score is the mean of the per-sentence scores (as pycocoevalcap).

    Raises :class:`MetricUnavailableError` when the CoreNLP jars are missing (see the module docstring) and
    ``JavaError`` without Java >= 8. ``java_max_memory`` is the JVM heap limit (pycocoevalcap uses 8G).
    """
    res, gts = prepare(candidates, mult_references, tokenize)
    lib = find_corenlp_dir(corenlp_dir)
    java = require_java("SPICE")
    with tempfile.TemporaryDirectory(prefix="spice_") as tmp:
        in_path, out_path = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(in_path, "w", encoding="utf-8") as f:
            json.dump([{"image_id": str(k), "test": res[k][0], "refs": gts[k]} for k in res], f)
        # The SPICE jar's manifest finds its other dependencies next to it; CoreNLP comes from `lib`.
        classpath = os.pathsep.join([str(_SPICE_JAR)] + [str(lib / jar) for jar in CORENLP_JARS])
        cmd = [java, f"-Xmx{java_max_memory}", "-cp", classpath, "edu.anu.spice.SpiceScorer",
               in_path, "-out", out_path, "-subset", "-silent"]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"SPICE failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
        with open(out_path, encoding="utf-8") as f:
            results = {item["image_id"]: item["scores"]["All"]["f"] for item in json.load(f)}
    sentence = [_to_float(results[str(k)]) for k in res]
    return {"spice": sum(sentence) / len(sentence)}, {"spice": sentence}


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
