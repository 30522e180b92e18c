"""The text encoder, the bi-encoder and the InfoNCE loss (real MiniLM weights, no mocks)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval.loss import info_nce
from retrieval.model import BiEncoder, build_model
from retrieval.text import TextEncoder

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


def test_text_encoder_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder("minilm", pooling="max")
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
