import pytest
import torch

from captioning.models import build_captioner
from captioning.search import Ensemble

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

VOCAB = 30


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(4, 11, 8, generator=g)
    lengths = torch.tensor([11, 6, 3, 9])
    tokens = torch.randint(4, VOCAB, (4, 7), generator=g)
    tokens[:, 0] = 1
    return frames, lengths, tokens


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_step_wise_equals_teacher_forced(decoder, make):
    model = make(decoder)
    frames, lengths, tokens = batch()
    with torch.no_grad():
        full = model(frames, lengths, tokens)["logits"].log_softmax(-1)  # (B, L, V)
        ens = Ensemble([model])
        ctx, state = ens.start(frames, lengths)
        steps = []
        for t in range(tokens.shape[1]):
            logp, state = ens.step(ctx, state, tokens[:, t])
            steps.append(logp)
    assert full.shape == (4, 7, VOCAB)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_padding_does_not_leak(decoder, make):
    """A clip gives the same logits alone and padded inside a batch with garbage after its last frame."""
    model = make(decoder)
    frames, lengths, tokens = batch()
    noisy = frames.clone()
    noisy[1, 6:] = 100.0
    with torch.no_grad():
        alone = model(frames[1:2, :6], lengths[1:2], tokens[1:2])["logits"]
        batched = model(noisy, lengths, tokens)["logits"][1:2]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_scheduled_sampling_keeps_shapes_and_is_seeded(decoder, make):
    model = make(decoder).train()
    frames, lengths, tokens = batch()
    torch.manual_seed(3)
    a = model(frames, lengths, tokens, tf_prob=0.5)["logits"]
    torch.manual_seed(3)
    b = model(frames, lengths, tokens, tf_prob=0.5)["logits"]
    torch.manual_seed(3)
    forced = model(frames, lengths, tokens, tf_prob=1.0)["logits"]
    assert a.shape == (4, 7, VOCAB)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, forced)
    a.sum().backward()
    assert model.decoder.embed.weight.grad is not None


def test_registry_errors():
    with pytest.raises(KeyError, match="gru, transformer"):
        build_captioner({"encoder": "bigru", "decoder": "lstm", "frame_dim": 8, "vocab_size": VOCAB})
    with pytest.raises(ValueError, match="unknown argument"):
        build_captioner({"encoder": "bigru", "decoder": "gru", "decoder_args": {"heads": 4}, "frame_dim": 8,
                         "vocab_size": VOCAB})


def test_transformer_word_embeddings_as_large_as_the_positions():
    """Scaled by sqrt(d_model), the word embeddings start at unit variance, the positions' own scale: with
    nn.Embedding's N(0, 1) they were sqrt(d_model) times larger and the word order was all but lost."""
    torch.manual_seed(0)
    model = build_captioner({"vocab_size": 500, "frame_dim": 8, "encoder": "bigru", "decoder": "transformer",
                             "decoder_args": {"d_model": 128, "n_heads": 4, "n_layers": 1, "d_ff": 64}})
    scaled = model.decoder.embed.weight * model.decoder.d_model ** 0.5
    assert 0.9 < scaled.std().item() < 1.1
