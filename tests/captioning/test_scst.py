"""SCST loss: samples come from the network that decodes at test time unless dropout is asked for."""
import string

import pytest
import torch

from captioning.scst import caption_log_probs, sample_captions, scst_loss
from captioning.vocab import SPECIALS, Vocabulary
from eval.fast_cider import FastCiderD

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

WORDS = list(string.ascii_lowercase)  # 26 words + 4 specials = the 30 of the `make` fixture


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_samples_without_dropout_unless_asked(make, baseline):
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    model = make("gru").train()
    model.decoder.dropout.p = 0.5  # strong dropout: samples differ when it is active
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randn(4, 9, 8, generator=g), "frame_lengths": torch.tensor([9, 7, 5, 9]),
             "audio_ids": ["a", "b", "c", "a"]}
    reward = FastCiderD({"a": ["a b c d e f g h", "i j k l m"], "b": ["n o p q r s", "t u v"],
                         "c": ["w x y z a b", "c d e f"]})  # random samples match some words: rewards differ

    def loss(dropout: bool, eval_mode: bool = False) -> float:
        torch.manual_seed(1)
        model.train(not eval_mode)
        value, mean_reward = scst_loss(model, batch, reward, vocab, 3, 6, baseline, dropout=dropout)
        assert model.training == (not eval_mode)  # the caller's mode is restored
        assert 0.0 <= mean_reward <= 10.0
        return value.item()

    assert loss(dropout=False) == loss(dropout=False, eval_mode=True)  # the test-time network
    assert loss(dropout=True) != loss(dropout=False)


@pytest.mark.parametrize("decoder", ["gru", "transformer"])
def test_one_teacher_forced_pass_gives_the_sampling_loops_log_probs(make, decoder):
    """SCST samples without gradient, then scores the samples in one pass: the log-probabilities and their
    gradients equal those the sampling loop computes, including at the last position (<eos> alone)."""
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    model = make(decoder).eval()
    g = torch.Generator().manual_seed(0)
    frames, lengths = torch.randn(3, 9, 8, generator=g), torch.tensor([9, 4, 7])
    torch.manual_seed(3)  # a draw where some captions stop early and some run to the end
    tokens, looped, mask = sample_captions(model, frames, lengths, vocab, num_samples=4, max_len=5)
    assert tokens.shape[1] == 5 and not mask.all()  # some captions ran to the end, some stopped earlier
    once = caption_log_probs(model, frames, lengths, tokens, vocab, num_samples=4, max_len=5)
    torch.testing.assert_close(once[mask], looped[mask], atol=1e-5, rtol=1e-5)
    grads = [torch.autograd.grad(x[mask].sum(), list(model.parameters()), allow_unused=True) for x in (looped, once)]
    for a, b in zip(*grads):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
