"""Part files hold plain arrays: one holding an object array (pickled Python data) is refused, naming the file and
the array, and never unpickled."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from features.parts import PLAN_JSON, digest, merge, part_done, part_path, write_part

FINGERPRINT = {"encoder": "cnn10", "encoder_spec": "{}", "checkpoint_sha256": "0" * 64,
               "encoder_weights_sha256": "2" * 64, "sample_rate": 32000,
               "frame_hop": 320, "frame_dim": 2, "clip_dim": 2, "dtype": "float32", "batch_size": 1,
               "manifest_sha256": "1" * 64}


class Payload:
    """Unpickling an instance would import this module: what a refused file must never make happen."""


def _parts(tmp_path: Path, **pickled: object) -> Path:
    """A parts folder of one batch (clip ``a``) whose part file holds ``pickled`` arrays as object arrays."""
    parts = tmp_path / "s.h5.parts"
    parts.mkdir()
    (parts / PLAN_JSON).write_text(json.dumps({"fingerprint": FINGERPRINT, "ids": ["a"], "batches": [[0]]}))
    meta = {"fingerprint_sha256": digest(FINGERPRINT), "batch": 0, "planned": ["a"], "ids": ["a"]}
    path = part_path(parts, 0)
    write_part(path, meta, np.zeros((3, 2), np.float32), np.array([3]), np.zeros((1, 2), np.float32), [])
    if pickled:
        with np.load(path) as z:
            arrays = dict(z)
        arrays.update({k: np.array([v, Payload()], dtype=object) for k, v in pickled.items()})
        np.savez(path, **arrays)
    return parts


def test_a_plain_part_is_merged(tmp_path):
    parts = _parts(tmp_path)
    assert merge(tmp_path / "s.h5", parts).is_file()


@pytest.mark.parametrize("key", ["lengths", "errors", "frames"])
def test_a_part_with_an_object_array_is_refused_by_merge(tmp_path, key):
    parts = _parts(tmp_path, **{key: 0})
    with pytest.raises(ValueError, match=rf"part-000000\.npz: refused: its '{key}' is an object array \(pickled"):
        merge(tmp_path / "s.h5", parts)
    assert not (tmp_path / "s.h5").exists() and not list(tmp_path.glob(".s.h5.tmp*"))


def test_a_part_whose_meta_is_pickled_is_refused_not_redone(tmp_path):
    parts = _parts(tmp_path, meta="{}")
    with pytest.raises(ValueError, match=r"part-000000\.npz: refused: its 'meta' is an object array"):
        part_done(part_path(parts, 0), digest(FINGERPRINT), 0, ["a"])
