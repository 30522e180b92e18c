import pytest
import torch

from captioning.search import Ensemble, beam_search

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

BOS, EOS = 1, 2


def clips(n: int = 6, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 15, (n,), generator=g)
    return torch.randn(n, int(lengths.max()), 8, generator=g), lengths


def one_at_a_time(model, frames, lengths, **kw):
    return [beam_search(model, frames[i:i + 1, : lengths[i]], lengths[i:i + 1], **kw)[0] for i in range(len(lengths))]


def test_batched_beam_equals_one_clip_at_a_time(make):
    frames, lengths = clips()
    for decoder in ("transformer", "gru"):
        model = make(decoder, seed=7)
        for kw in ({"beam_size": 3, "max_len": 12}, {"beam_size": 4, "max_len": 8, "length_norm": 1.0}):
            batched = beam_search(model, frames, lengths, bos=BOS, eos=EOS, **kw)
            assert batched == one_at_a_time(model, frames, lengths, bos=BOS, eos=EOS, **kw)
            assert all(len(words) <= kw["max_len"] and EOS not in words and BOS not in words for words in batched)


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_an_exhaustive_beam_finds_the_most_likely_caption(make, decoder):
    """With as many beams as captions of up to 2 words, beam search (no length normalisation) must return the
    caption of highest log-probability, found here by scoring every one of them teacher forced."""
    model = make(decoder, seed=3)
    frames, lengths = clips(n=3)
    words = [w for w in range(30) if w not in (0, BOS, EOS)]  # what a caption may hold: not pad, bos or eos
    captions = [[a] for a in words] + [[a, b] for a in words for b in words]

    def logprob(caption, i):
        tokens = torch.tensor([[BOS] + caption])
        with torch.no_grad():
            logp = model(frames[i:i + 1, : lengths[i]], lengths[i:i + 1], tokens)["logits"].log_softmax(-1)[0]
        return float(logp.gather(1, torch.tensor(caption + [EOS])[:, None]).sum())

    beam = beam_search(model, frames, lengths, bos=BOS, eos=EOS, beam_size=len(captions), max_len=2)
    for i in range(len(lengths)):
        best = max(captions, key=lambda c: logprob(c, i))
        assert beam[i] == best
        assert logprob(beam[i], i) > logprob(beam_search(model, frames[i:i + 1], lengths[i:i + 1], bos=BOS, eos=EOS,
                                                         beam_size=1, max_len=2)[0], i) - 1e-4  # greedy: no better


def test_min_len_is_respected(make):
    model = make("gru", seed=1)
    frames, lengths = clips()
    out = beam_search(model, frames, lengths, bos=BOS, eos=EOS, beam_size=3, min_len=6, max_len=9)
    assert all(6 <= len(words) <= 9 for words in out)


def test_ensemble_of_one_model_is_that_model(make):
    model = make("transformer", seed=2)
    frames, lengths = clips()
    alone = beam_search(model, frames, lengths, bos=BOS, eos=EOS, beam_size=3, max_len=10)
    assert beam_search(Ensemble([model]), frames, lengths, bos=BOS, eos=EOS, beam_size=3, max_len=10) == alone
    assert beam_search(Ensemble([model, model]), frames, lengths, bos=BOS, eos=EOS, beam_size=3, max_len=10) == alone


def test_ensemble_of_two_decoders_runs_and_mixes(make):
    transformer, gru = make("transformer", seed=2), make("gru", seed=4)
    frames, lengths = clips()
    both = Ensemble([transformer, gru])
    ctx, state = both.start(frames, lengths)
    logp, _ = both.step(ctx, state, torch.full((len(lengths),), BOS))
    parts = [Ensemble([m]).step(*Ensemble([m]).start(frames, lengths), torch.full((len(lengths),), BOS))[0]
             for m in (transformer, gru)]
    torch.testing.assert_close(logp, (parts[0] + parts[1]) / 2)
    out = beam_search(both, frames, lengths, bos=BOS, eos=EOS, beam_size=3, max_len=10)
    assert out == one_at_a_time(both, frames, lengths, bos=BOS, eos=EOS, beam_size=3, max_len=10)
