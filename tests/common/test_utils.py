"""The small shared utilities: atomic writes, CSV tables with required columns, length masks and masked means."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from common.io import atomic_output, atomic_write, device_of, read_csv, remove_stale_temps, temp_path, write_csv, write_text_atomic
from common.tensor import lengths_to_mask, masked_mean


# --- atomic writes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["w", "wb"])
def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, mode):
    path = tmp_path / "scores.json"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path, mode) as f:
            f.write("half of the new" if mode == "w" else b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_atomic_write_replaces_whole_file_and_creates_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "table.csv"
    write_text_atomic(path, "a,b\n1,2\n")
    write_text_atomic(path, "a,b\r\n")  # no newline translation: bytes as given
    assert path.read_bytes() == b"a,b\r\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]


def test_remove_stale_temps_keeps_live_writers(tmp_path):
    dead = tmp_path / ".a.wav.tmp999999999"  # no such process
    old_style = tmp_path / ".b.wav.tmp"
    mine = temp_path(tmp_path / "c.wav")
    for p in (dead, old_style, mine):
        p.write_bytes(b"")
    live = tmp_path / f".d.wav.tmp{os.getppid()}"  # a running process other than this one
    live.write_bytes(b"")
    remove_stale_temps(tmp_path, "a.wav")
    assert not dead.exists() and old_style.exists()
    remove_stale_temps(tmp_path, "*")  # every file of the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


# --- CSV tables -------------------------------------------------------------------------------------------------

def test_csv_round_trip_with_awkward_cells_and_bom(tmp_path):
    path = tmp_path / "t.csv"
    rows = [("a, \"b\"", "line one\nline two"), ("é", "")]
    write_csv(path, ("id", "text"), rows)
    table = read_csv(path, ("id", "text"))
    assert table == [{"id": "a, \"b\"", "text": "line one\nline two"}, {"id": "é", "text": ""}]
    assert table.header == ["id", "text"] and table.lines == [3, 4]  # a row's line is the one it ends on
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffid,text\nx,y\n\n".encode("utf-8"))  # as spreadsheet programs save UTF-8; blank line
    assert read_csv(bom, ("id",)) == [{"id": "x", "text": "y"}]


def test_csv_header_without_required_columns_names_file_missing_and_found(tmp_path):
    path = tmp_path / "wav.csv"
    path.write_text("audio_id,path,duration\na,/a.wav,1.0\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_csv(path, ("audio_id", "path", "sample_rate", "channels"))
    message = str(err.value)
    assert str(path) in message
    assert "missing columns ['sample_rate', 'channels']" in message
    assert "found audio_id,path,duration" in message


@pytest.mark.parametrize("content, message", [
    (None, r"t.csv: missing \(expected a CSV table with columns a,b\)"),
    (b"", r"t.csv: missing columns \['a', 'b'\] in the header .*found nothing"),
    (b"a,b\n1,2\n3\n", r"t.csv, line 3: 1 fields, expected 2 \(a,b\)"),
    (b"a,b\n\xff,2\n", r"t.csv: not UTF-8 text"),
    (b"a,b\n" + b"x" * 200_000 + b",2\n", r"t.csv: malformed CSV \(field larger than field limit"),
])
def test_bad_csv_tables_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_csv(path, ("a", "b"))


def test_csv_blank_rows_are_skipped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n,\n1,2\n \n", encoding="utf-8")
    assert read_csv(path, ()) == [{"a": "1", "b": "2"}]


# --- masks and masked means -------------------------------------------------------------------------------------

def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([3, 0, 5]), 5)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_masked_mean_over_valid_steps_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 4, generator=g)  # (B, T, D)
    lengths = torch.tensor([6, 2, 4])
    mean = masked_mean(x, lengths_to_mask(lengths, 6), dim=1)  # (B, D)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(mean[b], x[b, :n].mean(0))
    noisy = x.clone()
    noisy[1, 2:] = 1e6  # padding never leaks
    assert torch.equal(masked_mean(noisy, lengths_to_mask(lengths, 6), dim=1), mean)
    # a 0/1 integer mask (a tokenizer's attention_mask) counts the same as a bool one
    assert torch.equal(masked_mean(x, lengths_to_mask(lengths, 6).long(), dim=1), mean)
    # no valid step: 0, not NaN
    assert torch.equal(masked_mean(x, torch.zeros(3, 6, dtype=torch.bool), dim=1), torch.zeros(3, 4))


def test_masked_mean_is_the_hand_written_formula_bit_for_bit():
    """The expressions it replaced, kept here so a change of its arithmetic is noticed."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 13, 7, generator=g, requires_grad=True)
    valid = lengths_to_mask(torch.tensor([13, 1, 7, 0, 12]), 13)
    weights = valid.unsqueeze(-1).to(x.dtype)
    assert torch.equal(masked_mean(x, valid, dim=1), (x * weights).sum(1) / weights.sum(1).clamp(min=1.0))
    # time on the last dimension, mask broadcast over channels (PANNs' head)
    y = torch.randn(5, 3, 13, generator=g) * lengths_to_mask(torch.tensor([13, 1, 7, 2, 12]), 13)[:, None]
    lengths = torch.tensor([13, 1, 7, 2, 12])
    assert torch.equal(masked_mean(y, lengths_to_mask(lengths, 13)[:, None], dim=2),
                       y.sum(dim=2) / lengths[:, None].to(y.dtype))
    # over every element, with gradient (SCST's loss)
    mask = torch.rand(5, 13, generator=g) > 0.3
    loss = masked_mean(x[..., 0], mask, dim=None)
    reference = (x[..., 0] * mask).sum() / mask.sum()
    assert torch.equal(loss, reference)
    assert torch.equal(torch.autograd.grad(loss, x)[0], torch.autograd.grad(reference, x)[0])


def test_a_full_disk_is_named_and_leaves_the_old_file(tmp_path, monkeypatch):
    """torch reports a full disk as "file write failed": the write says "no space left" with the folder instead,
    removes its temporary file and keeps the previous result."""
    import shutil
    from collections import namedtuple

    import torch

    from common.checkpoint import save_checkpoint
    from common.cli import describe_error

    target = tmp_path / "last.pt"
    save_checkpoint({"kind": "x", "state_dict": {}, "epoch": 1}, target)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10, 10, 0))
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")))
    with pytest.raises(OSError) as err:
        save_checkpoint({"kind": "x", "state_dict": {}, "epoch": 2}, target)
    assert describe_error(err.value) == f"{tmp_path}: No space left on {device_of(tmp_path)} while writing last.pt"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 1


# --- one rule for outputs written by name (HDF5, ONNX, folders) ---------------------------------------------------

def test_atomic_output_swaps_a_whole_folder_or_keeps_the_old_one(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "graph.onnx").write_text("old graph")
    (tmp_path / ".export.tmp999999999").mkdir()  # a dead process's unfinished folder
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_output(out) as tmp:
            tmp.mkdir()
            (tmp / "graph.onnx").write_text("half")
            raise RuntimeError("killed mid-export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert (out / "graph.onnx").read_text() == "old graph"
    with atomic_output(out) as tmp:
        tmp.mkdir()
        (tmp / "graph.onnx").write_text("new graph")
        (tmp / "export.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "graph.onnx"]
    assert (out / "graph.onnx").read_text() == "new graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_an_output_too_big_for_the_disk_is_refused_before_the_work(small_disk):
    ran = []
    with pytest.raises(OSError) as err:
        with atomic_output(small_disk.path / "store.h5", need=64 << 20):
            ran.append(True)
    assert not ran and err.value.errno == errno.ENOSPC
    assert f"tmpfs (mounted at {small_disk.path})" in str(err.value) and "store.h5 needs about 64.0 MB" in str(err.value)


def test_an_hdf5_file_filling_the_disk_is_named_removed_and_the_old_one_kept(small_disk):
    import h5py
    import numpy as np

    path = small_disk.path / "index.h5"
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f["rows"] = np.arange(10)
    small_disk.fill(leave=64 << 10)
    with pytest.raises(OSError) as err:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            f["rows"] = np.zeros(1 << 20)  # 8 MB: more than is left
    assert err.value.errno == errno.ENOSPC and f"tmpfs (mounted at {small_disk.path})" in str(err.value)
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler", "index.h5"]
    with h5py.File(path, "r") as f:
        assert f["rows"][:].tolist() == list(range(10))
