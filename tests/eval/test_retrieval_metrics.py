"""Retrieval metrics against hand-computed cases and the Clotho 5-captions convention."""
import numpy as np
import pytest
import torch

from eval.retrieval import (clotho_text_to_audio, ranking_metrics, ranking_metrics_from_chunks, retrieval_metrics,
                            retrieval_metrics_from_embeddings)


def test_several_relevant_and_one_beyond_top10():
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01, 0.0]])
    # Relevant items at ranks 2, 4 and 12: AP@10 = (1/2 + 2/4) / min(3, 10).
    got = ranking_metrics(sim, [{1, 3, 11}])
    assert got == {"R@1": 0.0, "R@5": 1.0, "R@10": 1.0, "mAP@10": pytest.approx(1.0 / 3)}


def test_more_than_ten_relevant_divides_by_ten():
    sim = -np.arange(30, dtype=float)[None, :]  # item i at rank i + 1
    got = ranking_metrics(sim, [set(range(0, 24, 2))])  # 12 relevant, 5 in the top 10 at ranks 1, 3, 5, 7, 9
    assert got["mAP@10"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5 + 4 / 7 + 5 / 9) / 10)


def test_ties_are_pessimistic():
    # Query 0: relevant item 2 tied with two irrelevant items for the top score -> rank 3.
    # Query 1: all scores equal, relevant {0, 1} among 20 -> ranks 19 and 20.
    # Query 2: relevant {4, 5} tied with each other and one irrelevant -> ranks 2 and 3.
    sim = np.zeros((3, 20))
    sim[0, [0, 1, 2]] = 1.0
    sim[2, [3, 4, 5]] = [1.0, 1.0, 1.0]
    sim[2, 0] = 2.0
    relevant = [{2}, {0, 1}, {4, 5}]
    per_query = [ranking_metrics(sim[q: q + 1], [relevant[q]]) for q in range(3)]
    assert per_query[0] == {"R@1": 0.0, "R@5": 1.0, "R@10": 1.0, "mAP@10": pytest.approx(1 / 3)}
    assert per_query[1] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "mAP@10": 0.0}
    # Ranks 3 and 4 (item 0 above, items 3/4/5 tied: irrelevant 3 first): AP = (1/3 + 2/4) / 2.
    assert per_query[2]["mAP@10"] == pytest.approx((1 / 3 + 2 / 4) / 2) and per_query[2]["R@1"] == 0.0
    together = ranking_metrics(sim, relevant, chunk_size=2)
    for name in together:
        assert together[name] == pytest.approx(np.mean([p[name] for p in per_query]))
    arrays = ranking_metrics_from_chunks([sim[:2], sim[2:]], relevant, per_query=True)  # each query's own score
    for name, values in arrays.items():
        assert values.tolist() == pytest.approx([p[name] for p in per_query]), name


def test_fewer_items_than_cutoff():
    got = ranking_metrics(np.array([[0.1, 0.9, 0.5]]), [{0}])
    assert got == {"R@1": 0.0, "R@5": 1.0, "R@10": 1.0, "mAP@10": pytest.approx(1 / 3)}


def test_chunking_and_torch_input_do_not_change_results():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(300, 120)).astype(np.float32)
    sim[::7] = np.round(sim[::7], 1)  # plenty of ties
    relevant = [set(rng.choice(120, size=rng.integers(1, 8), replace=False).tolist()) for _ in range(300)]
    base = ranking_metrics(sim, relevant, chunk_size=300)
    assert ranking_metrics(torch.from_numpy(sim), relevant, chunk_size=17) == pytest.approx(base)
    chunks = (sim[a: a + 64] for a in range(0, 300, 64))
    assert ranking_metrics_from_chunks(chunks, relevant) == pytest.approx(base)
    # Brute force: full pessimistic sort of every row.
    ap, r5 = [], []
    for q in range(300):
        is_rel = np.isin(np.arange(120), list(relevant[q]))
        order = np.lexsort((is_rel, -sim[q]))  # by score desc, irrelevant first among ties
        ranks = np.nonzero(is_rel[order])[0] + 1
        r5.append(float((ranks <= 5).any()))
        ap.append(sum((i + 1) / r for i, r in enumerate(ranks) if r <= 10) / min(len(ranks), 10))
    assert base["mAP@10"] == pytest.approx(np.mean(ap)) and base["R@5"] == pytest.approx(np.mean(r5))


def test_invalid_input():
    with pytest.raises(ValueError, match="at least one relevant"):
        ranking_metrics(np.zeros((2, 3)), [{0}, set()])
    with pytest.raises(ValueError, match="only 3 items"):
        ranking_metrics(np.zeros((1, 3)), [{5}])
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(np.full((1, 3), np.nan), [{0}])
    with pytest.raises(ValueError, match="2 rows for 3 queries"):
        ranking_metrics(np.zeros((2, 3)), [{0}, {1}, {2}])


def test_clotho_convention_on_caption_ids(eval_captions):
    """Clips are one-hot vectors and captions copy their clip's vector, so the answers are known."""
    ids, mult_refs = eval_captions
    n_clips = len(ids)
    text_to_audio = clotho_text_to_audio(n_clips)
    assert len(text_to_audio) == sum(len(r) for r in mult_refs)
    audio = np.eye(n_clips, dtype=np.float32)
    perfect = retrieval_metrics_from_embeddings(audio[text_to_audio], audio, text_to_audio, chunk_size=500)
    assert all(v == pytest.approx(1.0) for d in perfect.values() for v in d.values())
    # The first caption of every clip becomes a zero vector, tied with everything (ranked last, pessimistically):
    # t2a loses 1/5 of queries entirely, a2t still ranks the 4 other captions first (AP@10 = 4/5, R@1 = 1).
    text = audio[text_to_audio]
    text[::5] = 0.0
    got = retrieval_metrics_from_embeddings(text, audio, text_to_audio, chunk_size=333)
    assert got["text_to_audio"]["R@10"] == pytest.approx(0.8, abs=1e-12)
    assert got["audio_to_text"]["R@1"] == pytest.approx(1.0)
    assert got["audio_to_text"]["mAP@10"] == pytest.approx(0.8)
    # The same from the similarity matrix, in torch.
    sim = torch.from_numpy(text @ audio.T)
    assert retrieval_metrics(sim, text_to_audio.tolist(), chunk_size=1000) == {
        k: pytest.approx(v) for k, v in got.items()}
