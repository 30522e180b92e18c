"""The text encoder, the bi-encoder and the InfoNCE loss (real MiniLM weights, no mocks)."""
from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrieval.loss import info_nce
from retrieval.model import BiEncoder, build_model
from common.text_encoder import TextEncoder

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

MODEL_ARGS = {"audio_encoder": {"name": "cnn6", "width": 0.125, "sample_rate": 16000},
              "text_encoder": {"name": "minilm", "pooling": "mean", "freeze_layers": -1}, "embed_dim": 32}


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder("minilm", pooling="mean")


def test_minilm_mean_pooling_matches_padding_free_encoding(minilm):
    captions = ["a dog barks", "rain falls steadily on a tin roof while cars pass"]
    minilm.eval()
    with torch.no_grad():
        batch = minilm(**minilm.tokenize(captions))  # (2, 384), the short one padded
        alone = minilm(**minilm.tokenize(captions[:1]))
    assert batch.shape == (2, 384)
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)
    # pretrained weights: related sentences are closer than unrelated ones
    with torch.no_grad():
        e = F.normalize(minilm(**minilm.tokenize(["a dog barks", "a puppy is barking", "heavy rain on a roof"])))
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_cls_pooling_is_first_token(minilm):
    cls = TextEncoder("minilm", pooling="cls").eval()
    tokens = cls.tokenize(["birds sing"])
    with torch.no_grad():
        hidden = cls.model(**tokens).last_hidden_state
        torch.testing.assert_close(cls(**tokens), hidden[:, 0])


def test_text_encoder_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder("minilm", pooling="max")

    def no_network(*args, **kwargs):
        raise AssertionError(f"a network look-up: {args[:2]}")  # transformers retried the hub for 25 s

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(ValueError, match="offline"):  # a hub name that is not cached is never downloaded
        TextEncoder("no-such-user/no-such-model")
    with pytest.raises(ValueError, match="layers"):
        TextEncoder("minilm", freeze_layers=7)


def test_freeze_layers_freezes_only_lower_layers():
    enc = TextEncoder("minilm", freeze_layers=4)
    trainable = {n.split(".")[2] for n, p in enc.model.named_parameters() if p.requires_grad and "layer." in n}
    assert trainable == {"4", "5"}
    assert not any(p.requires_grad for p in enc.model.embeddings.parameters())


def test_bi_encoder_outputs_unit_vectors_and_clamped_temperature():
    torch.manual_seed(0)
    model = build_model(MODEL_ARGS)
    assert math.isclose(model.temperature.item(), 0.07, rel_tol=1e-6)
    tokens = model.text_encoder.tokenize(["a beep", "a hum", "noise"])
    out = model(torch.randn(3, 16000), torch.tensor([16000, 12000, 8000]), **tokens)
    assert out["audio"].shape == out["text"].shape == (3, 32)
    torch.testing.assert_close(out["audio"].norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out["text"].norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        model.log_temperature.fill_(math.log(1e-4))
    assert model.temperature.item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="model_args"):
        build_model({"audio_encoder": MODEL_ARGS["audio_encoder"]})


def test_bi_encoder_state_dict_keeps_audio_encoder_prefix():
    model = build_model(MODEL_ARGS)
    keys = list(model.state_dict())
    assert any(k.startswith("audio_encoder.conv_block1.") for k in keys)
    assert isinstance(model, BiEncoder) and model.sample_rate == 16000


def _reference_loss(audio, text, ids, temperature):
    """Straightforward per-row loop: softmax over own pair + pairs of other clips only."""
    losses = []
    for sim in (text @ audio.T, audio @ text.T):
        for i in range(len(ids)):
            keep = [j for j in range(len(ids)) if j == i or ids[j] != ids[i]]
            logits = sim[i, keep] / temperature
            losses.append(-(logits[keep.index(i)] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


def test_info_nce_masks_captions_of_the_same_clip():
    torch.manual_seed(1)
    audio = F.normalize(torch.randn(6, 8), dim=-1)
    text = F.normalize(torch.randn(6, 8), dim=-1)
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    t = torch.tensor(0.07)
    torch.testing.assert_close(info_nce(audio, text, ids, t), _reference_loss(audio, text, ids, t))
    # without repeats the mask changes nothing: plain symmetric cross-entropy
    distinct = torch.arange(6)
    targets = torch.arange(6)
    plain = 0.5 * (F.cross_entropy(text @ audio.T / t, targets) + F.cross_entropy(audio @ text.T / t, targets))
    torch.testing.assert_close(info_nce(audio, text, distinct, t), plain)
    # a perfect match with all other clips far away has a small loss
    assert info_nce(audio, audio, distinct, torch.tensor(0.01)) < 0.05
    with pytest.raises(ValueError, match="info_nce"):
        info_nce(audio, text[:5], ids, t)


def test_load_model_names_the_file_and_the_keys_that_do_not_fit(tmp_path):
    from common import save_checkpoint
    from retrieval.model import load_model

    args = {"audio_encoder": {"name": "cnn6", "width": 0.125, "sample_rate": 16000},
            "text_encoder": {"name": "minilm", "freeze_layers": -1}, "embed_dim": 16}
    state = build_model(args).state_dict()
    state["audio_proj.weight"] = torch.zeros(3, 3)
    save_checkpoint({"kind": "retrieval", "model_args": args, "state_dict": state}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd.pt does not fit BiEncoder: shape mismatches: audio_proj.weight"):
        load_model(tmp_path / "odd.pt")
    save_checkpoint({"kind": "retrieval", "model_args": {"embed_dim": 16}, "state_dict": {}}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="bare.pt: model_args do not describe a bi-encoder"):
        load_model(tmp_path / "bare.pt")


def test_bi_encoder_options_clap_layout_and_defaults_unchanged():
    plain = build_model(MODEL_ARGS)
    assert {k for k in plain.state_dict() if not k.startswith(("audio_encoder.", "text_encoder."))} == {
        "audio_proj.weight", "audio_proj.bias", "text_proj.weight", "text_proj.bias", "log_temperature"}
    assert set(plain(torch.randn(2, 16000), None, **plain.text_encoder.tokenize(["a", "b"]))) == {
        "audio", "text", "temperature"}
    with pytest.raises(ValueError, match="no transforms"):
        plain.temperature_t

    clap = build_model({**MODEL_ARGS, "projection": "mlp", "transforms": True}).eval()
    own = {k: tuple(v.shape) for k, v in clap.state_dict().items() if not k.startswith(("audio_encoder.",
                                                                                          "text_encoder."))}
    assert own == {**{f"{m}_proj.{i}.{p}": s for m, d in (("audio", 64), ("text", 384))
                      for i, p, s in ((0, "weight", (32, d)), (0, "bias", (32,)), (2, "weight", (32, 32)),
                                      (2, "bias", (32,)))},
                   **{f"{m}_transform.{i}.{p}": s for m in ("audio", "text")
                      for i in (0, 3) for p, s in (("weight", (32, 32)), ("bias", (32,)))},
                   "log_temperature": (), "log_temperature_t": ()}
    with torch.no_grad():
        clap.log_temperature_t.fill_(math.log(0.05))
        out = clap(torch.randn(2, 16000), None, **clap.text_encoder.tokenize(["a beep", "a hum"]))
    torch.testing.assert_close(out["audio_mlp"], clap.audio_transform(out["audio"]))
    torch.testing.assert_close(out["text_mlp"], clap.text_transform(out["text"]))
    assert out["temperature_t"].item() == pytest.approx(0.05) and out["temperature"].item() == pytest.approx(0.07)

    with pytest.raises(ValueError, match=r"Invalid projection. \(expected one of \('linear', 'mlp'\), found 'deep'\)"):
        build_model({**MODEL_ARGS, "projection": "deep"})
    with pytest.raises(ValueError, match="Invalid transforms"):
        build_model({**MODEL_ARGS, "transforms": "yes"})
    with pytest.raises(ValueError, match="text_encoder.pretrained is not a model argument"):
        build_model({**MODEL_ARGS, "text_encoder": {**MODEL_ARGS["text_encoder"], "pretrained": False}})


def test_pooler_pooling_and_config_only_build(tmp_path):
    import shutil

    from transformers import DistilBertConfig

    from common.text_encoder import TextEncoderFilesError, resolve_text_encoder

    pooled = TextEncoder("minilm", pooling="pooler").eval()
    tokens = pooled.tokenize(["birds sing"])
    with torch.no_grad():
        torch.testing.assert_close(pooled(**tokens), pooled.model(**tokens).pooler_output)
    # from the config alone: same architecture and tokenizer, random weights, nothing read but config + tokenizer
    random = TextEncoder("minilm", pooling="pooler", pretrained=False)
    assert not random.model.training and random.tokenize(["birds sing"])["input_ids"].tolist() == \
        tokens["input_ids"].tolist()
    assert random.model.state_dict().keys() == pooled.model.state_dict().keys()
    assert not torch.equal(random.model.pooler.dense.weight, pooled.model.pooler.dense.weight)

    # a model without a pooler is refused for pooling "pooler"
    folder = tmp_path / "distilbert"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(resolve_text_encoder("minilm")) / name, folder)
    DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64).save_pretrained(folder)
    with pytest.raises(ValueError, match=r"\(DistilBertModel\) has no pooler layer; use 'cls' or 'mean'"):
        TextEncoder(str(folder), pooling="pooler", pretrained=False)
    assert TextEncoder(str(folder), pooling="cls", pretrained=False).dim == 32

    # a folder without a tokenizer, or without config.json, says what it needs
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    with pytest.raises(TextEncoderFilesError, match=rf"cannot build the model from '{folder}' \(the folder lacks "
                                                    r"tokenizer files .*needs only config.json and the tokenizer"):
        TextEncoder(str(folder), pretrained=False)
    with pytest.raises(TextEncoderFilesError, match=r"offline \(the folder lacks tokenizer files"):
        TextEncoder(str(folder))  # with pretrained weights: the same check
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TextEncoderFilesError, match=r"lacks config.json and tokenizer files"):
        TextEncoder(str(empty), pretrained=False)


def test_long_audio_views_crop_and_windows():
    from retrieval.embed import audio_views

    wave = np.arange(25, dtype=np.float32)
    assert [v.tolist() for v in audio_views(wave, 10, "whole")] == [wave.tolist()]
    assert audio_views(wave, 10, "crop")[0].tolist() == list(range(7, 17))  # the central 10
    windows = audio_views(wave, 10, "windows")
    assert [(v[0], len(v)) for v in windows] == [(0, 10), (10, 10), (15, 10)]  # the last one ends at the end
    for how in ("whole", "crop", "windows"):
        assert [v.tolist() for v in audio_views(wave[:10], 10, how)] == [wave[:10].tolist()]  # short: whole
    with pytest.raises(ValueError, match="Invalid long_audio"):
        audio_views(wave, 10, "random")


def test_window_average_embedding_is_the_normalised_mean_of_its_windows():
    from retrieval.embed import audio_embeddings

    torch.manual_seed(0)
    model = build_model(MODEL_ARGS, pretrained=False).eval()
    rng = np.random.default_rng(0)
    long, short = rng.standard_normal(16000 * 5).astype(np.float32), rng.standard_normal(8000).astype(np.float32)
    got = audio_embeddings(model, [long, short], long_audio="windows", window_seconds=2.0)
    parts = audio_embeddings(model, [long[:32000], long[32000:64000], long[-32000:], short])
    torch.testing.assert_close(got[0], F.normalize(parts[:3].mean(0), dim=0))
    assert torch.equal(got[1], parts[3])  # a clip shorter than the window is embedded whole
    crop = audio_embeddings(model, [long], long_audio="crop", window_seconds=2.0)
    assert torch.equal(crop[0], audio_embeddings(model, [long[24000:56000]])[0])
