import torch

from captioning.search import Ensemble, beam_search

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


def test_beam_finds_at_least_greedy_score(make):
    """Beam search must never return a caption less likely than greedy's (no length normalisation)."""
    model = make("transformer", seed=3)
    frames, lengths = clips()

    def logprob(words, i):
        tokens = torch.tensor([[BOS] + words])
        with torch.no_grad():
            logp = model(frames[i:i + 1, : lengths[i]], lengths[i:i + 1], tokens)["logits"].log_softmax(-1)[0]
        return float(logp.gather(1, torch.tensor(words + [EOS])[:, None]).sum())

    greedy = beam_search(model, frames, lengths, bos=BOS, eos=EOS, beam_size=1, max_len=10)
    beam = beam_search(model, frames, lengths, bos=BOS, eos=EOS, beam_size=5, max_len=10)
    for i in range(len(lengths)):
        assert logprob(beam[i], i) >= logprob(greedy[i], i) - 1e-4


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
