"""SCST loss: samples come from the network that decodes at test time unless dropout is asked for."""
import string

import pytest
import torch

from captioning.scst import scst_loss
from captioning.vocab import SPECIALS, Vocabulary
from eval.fast_cider import FastCiderD

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
