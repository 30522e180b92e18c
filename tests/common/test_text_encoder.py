"""The text encoder's cache of its frozen layers: same outputs and gradients as the full pass, fewer computations."""
from __future__ import annotations

import pytest
import torch

from common.text_encoder import TextEncoder

CAPTIONS = ["a dog barks twice", "rain falls on a metal roof while a car passes by", "a dog barks twice", "birds"]


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    full = TextEncoder("minilm", freeze_layers=5, dropout=0.0)
    cached = TextEncoder("minilm", freeze_layers=5, dropout=0.0, cache_frozen=True)
    cached.load_state_dict(full.state_dict())
    return full, cached


def _pass(encoder: TextEncoder, captions: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    encoder.train().zero_grad()
    tokens = encoder.tokenize(captions)
    out = encoder(tokens["input_ids"], tokens["attention_mask"])
    out.square().sum().backward()
    return out.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone()  # the unused pooler: None
                          for p in encoder.parameters() if p.requires_grad]


def test_cached_pass_equals_the_full_pass_with_its_gradients(encoders):
    full, cached = encoders
    (out, grads), (out_cached, grads_cached) = _pass(full, CAPTIONS), _pass(cached, CAPTIONS)
    assert len(cached._cache) == 3  # one entry per distinct caption
    torch.testing.assert_close(out_cached, out, atol=1e-5, rtol=1e-5)
    assert len(grads) == len(grads_cached) > 0
    for g, g_cached in zip(grads, grads_cached):
        torch.testing.assert_close(g_cached, g, atol=1e-5, rtol=1e-4)
    # from the cache now, alone or padded beside a longer caption, in eval mode too
    again, _ = _pass(cached, CAPTIONS[:1])
    torch.testing.assert_close(again[0], out[0], atol=1e-5, rtol=1e-5)
    cached.eval()
    with torch.no_grad():
        tokens = cached.tokenize(CAPTIONS[::-1])
        torch.testing.assert_close(cached(tokens["input_ids"], tokens["attention_mask"]), out.flip(0),
                                   atol=1e-5, rtol=1e-5)


def test_loading_weights_empties_the_cache(encoders):
    full, cached = encoders
    _pass(cached, CAPTIONS)
    assert cached._cache
    state = {k: v.clone() for k, v in full.state_dict().items()}
    state["model.encoder.layer.0.output.dense.bias"] += 0.5  # a frozen layer changes
    cached.load_state_dict(state)
    assert not cached._cache
    full_changed = TextEncoder("minilm", freeze_layers=5, dropout=0.0)
    full_changed.load_state_dict(state)
    torch.testing.assert_close(_pass(cached, CAPTIONS)[0], _pass(full_changed, CAPTIONS)[0], atol=1e-5, rtol=1e-5)
