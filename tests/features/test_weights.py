"""Weight loading: official PANNs and project checkpoints (retrieval ones refused), the window for long audio chosen
at load time; strict errors that name keys and files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from features.encoders import build_audio_encoder
from features.weights import CHUNK_SECONDS, checkpoint_sha256, chunked_spec, load_audio_encoder, save_audio_encoder

# Shapes of a few tensors in the published checkpoints (PANNs, Kong et al. 2020).
PUBLISHED_SHAPES = {
    "cnn14": {"conv_block1.conv1.weight": (64, 1, 3, 3), "conv_block6.conv2.weight": (2048, 2048, 3, 3),
              "fc1.weight": (2048, 2048), "fc_audioset.weight": (527, 2048), "bn0.running_mean": (64,),
              "logmel_extractor.melW": (513, 64), "spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024)},
    "cnn10": {"conv_block4.conv2.weight": (512, 512, 3, 3), "fc1.weight": (512, 512)},
    "cnn6": {"conv_block1.conv1.weight": (64, 1, 5, 5), "conv_block4.conv1.weight": (512, 256, 5, 5)},
    "wavegram_logmel_cnn14": {"pre_conv0.weight": (64, 1, 11), "pre_block2.conv2.weight": (128, 128, 3),
                              "pre_block4.conv1.weight": (64, 4, 3, 3), "conv_block2.conv1.weight": (128, 128, 3, 3)},
}


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, sample_rate: int) -> bool:
    wave = torch.randn(1, sample_rate * 2) * 0.1
    with torch.no_grad():
        return torch.allclose(a.eval()(wave)["clipwise"], b.eval()(wave)["clipwise"], atol=1e-6)


@pytest.mark.parametrize("name", ["cnn10", "cnn6", "wavegram_logmel_cnn14"])
def test_official_checkpoints_load_strictly(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_audio_encoder(name)  # published width: the checkpoint must fit unchanged
    state = model.state_dict()
    for key, shape in PUBLISHED_SHAPES[name].items():
        assert tuple(state[key].shape) == shape, key
    path = tmp_path / f"{name}.pth"
    torch.save({"model": state}, path)
    loaded = load_audio_encoder(path, name)
    assert loaded.spec == {"name": name, "sample_rate": 32000, "chunk_seconds": CHUNK_SECONDS}
    assert _same_outputs(model, loaded, 32000)


def test_cnn14_published_shapes_and_16k_inference(tmp_path: Path) -> None:
    state = build_audio_encoder("cnn14").state_dict()
    for key, shape in PUBLISHED_SHAPES["cnn14"].items():
        assert tuple(state[key].shape) == shape, key
    model16 = build_audio_encoder("cnn14", sample_rate=16000, width=0.25)
    torch.save({"model": model16.state_dict()}, tmp_path / "Cnn14_16k_mAP=0.438.pth")
    loaded = load_audio_encoder(tmp_path / "Cnn14_16k_mAP=0.438.pth", "cnn14", width=0.25)
    assert loaded.sample_rate == 16000 and loaded.mel.window_size == 512 and loaded.mel.fmax == 8000
    assert _same_outputs(model16, loaded, 16000)


def test_wrong_checkpoints_name_the_keys(tmp_path: Path) -> None:
    state = build_audio_encoder("cnn10", width=0.25).state_dict()
    del state["conv_block2.bn1.running_var"]
    state["head.extra.weight"] = torch.zeros(3)
    state["fc1.weight"] = torch.zeros(7, 5)
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ValueError) as err:
        load_audio_encoder(path, "cnn10", width=0.25)
    msg = str(err.value)
    for part in ("broken.pth", "conv_block2.bn1.running_var", "head.extra.weight", "fc1.weight", "(7, 5)", "(128, 128)"):
        assert part in msg, part
    # non-strict loads what fits and keeps the rest as built
    loaded = load_audio_encoder(path, "cnn10", strict=False, width=0.25)
    assert torch.equal(loaded.conv_block1.conv1.weight, state["conv_block1.conv1.weight"])
    # a checkpoint of another width is a shape error, not a silent partial load
    torch.save({"model": build_audio_encoder("cnn10", width=0.5).state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(ValueError, match="shape mismatches: .*conv_block1.conv1.weight"):
        load_audio_encoder(tmp_path / "wide.pth", "cnn10", width=0.25)


def test_missing_corrupt_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nowhere.pth"):
        load_audio_encoder(tmp_path / "nowhere.pth", "cnn14")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_audio_encoder(tmp_path / "corrupt.pth", "cnn14")
    torch.save({"weights": {}}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="Unrecognised checkpoint .*odd.pth"):
        load_audio_encoder(tmp_path / "odd.pth")
    torch.save({"model": {}}, tmp_path / "official.pth")
    with pytest.raises(ValueError, match="give the encoder name"):
        load_audio_encoder(tmp_path / "official.pth")


def test_project_format_and_window_chosen_at_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = build_audio_encoder("cnn6", width=0.25, chunk_seconds=5.0)
    save_audio_encoder(enc, tmp_path / "enc" / "audio_encoder.pt")
    assert [p.name for p in (tmp_path / "enc").iterdir()] == ["audio_encoder.pt"]  # no temp file left
    path = tmp_path / "enc" / "audio_encoder.pt"
    assert load_audio_encoder(path, chunk_seconds=5.0).spec == {"name": "cnn6", "width": 0.25, "chunk_seconds": 5.0}
    loaded = load_audio_encoder(path)  # the window is the loader's choice, one default
    assert CHUNK_SECONDS == 10.0 and loaded.spec == {"name": "cnn6", "width": 0.25, "chunk_seconds": 10.0}
    assert loaded.chunk_samples == 63 * loaded.frame_hop  # 10 s (62.5 frames) rounded up to whole output frames
    assert _same_outputs(enc, loaded, 32000)  # same weights (2 s: shorter than either window)
    for whole in (None, 0):
        unwindowed = load_audio_encoder(path, chunk_seconds=whole)
        assert unwindowed.chunk_samples is None and "chunk_seconds" not in unwindowed.spec
    with pytest.raises(ValueError, match="holds encoder 'cnn6'"):
        load_audio_encoder(path, "cnn14")


def test_chunked_spec_only_for_encoders_that_window() -> None:
    assert chunked_spec({"name": "cnn10", "width": 0.5}, 7) == {"name": "cnn10", "width": 0.5, "chunk_seconds": 7.0}
    assert chunked_spec({"name": "cnn10", "chunk_seconds": 3.0}, 0) == {"name": "cnn10"}
    ast = {"name": "ast", "max_length": 1024}  # AST windows at its own input length
    assert chunked_spec(ast, 10.0) == ast
    assert chunked_spec({"name": "no_such_encoder"}, 10.0) == {"name": "no_such_encoder"}  # refused when built


def test_retrieval_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    """The bi-encoder's layout belongs to retrieval: later stages read the audio_encoder.pt written beside it."""
    enc = build_audio_encoder("cnn6", width=0.25)
    retrieval = {"kind": "retrieval",
                 "model_args": {"audio_encoder": dict(enc.spec), "text_encoder": {"name": "minilm"}},
                 "state_dict": {f"audio_encoder.{k}": v for k, v in enc.state_dict().items()}}
    torch.save(retrieval, tmp_path / "best.pt")
    with pytest.raises(ValueError, match=r"best\.pt is a retrieval checkpoint .*pass the audio_encoder\.pt "
                                         r"that retrieval\.train writes beside it"):
        load_audio_encoder(tmp_path / "best.pt")
    with pytest.raises(ValueError, match="retrieval checkpoint"):
        load_audio_encoder(tmp_path / "best.pt", "cnn6")


def test_strict_load_holds_real_float32_tensors(tmp_path: Path) -> None:
    """Strict loads skip random init (built on the meta device); a half-precision file still gives float32."""
    torch.manual_seed(0)
    enc = build_audio_encoder("cnn10", width=0.25)
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in enc.state_dict().items()}},
               tmp_path / "half.pth")
    loaded = load_audio_encoder(tmp_path / "half.pth", "cnn10", width=0.25)
    tensors = list(loaded.parameters()) + list(loaded.buffers())
    assert not any(t.is_meta for t in tensors)
    assert {t.dtype for t in loaded.parameters()} == {torch.float32}
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == \
        {n: p.requires_grad for n, p in enc.named_parameters()}
    assert torch.equal(loaded.fc1.weight, enc.fc1.weight.half().float())


def test_checkpoint_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    assert checkpoint_sha256(path, chunk_bytes=4096) == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="absent.bin"):
        checkpoint_sha256(tmp_path / "absent.bin")
