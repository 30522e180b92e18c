"""Re-ranking the final beams by the retrieval model's audio-text similarity: in captioning.decode (over a store's
clip vectors), captioning.infer (over raw audio) and bundles, all giving the same captions, and refused where the
clip vectors are not the retrieval model's own encoder's.

The retrieval model is the session's tiny trained bi-encoder; its ``audio_encoder.pt`` extracts the stores, and a
random captioner (decoding the tiny corpus's words) proposes the candidates.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioning.bundle import load_bundle, make_bundle
from captioning.decode import (LENGTH_NORMS, RERANK_WEIGHTS, candidate_captions, decode, decoding_record_path,
                               load_ensemble, store_hypotheses, variant_path)
from captioning.infer import infer
from captioning.vocab import Vocabulary
from features.encoders import build_audio_encoder
from features.extract import extract
from features.manifest import read_manifest
from features.store import open_store
from features.weights import AUDIO_ENCODER_FILE, checkpoint_sha256, save_audio_encoder
from retrieval.rerank import Reranker
from tests.captioning.conftest import save_random_captioner, write_split

pytestmark = pytest.mark.device_audit  # tensors made where the model is (tests/device_audit.py)

HUGE = 1e6  # a re-ranking weight that leaves the choice to the similarity alone


@pytest.fixture(scope="module")
def setup(trained: Path, tiny_corpus: dict[str, Path], tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("rerank")
    encoder_file = trained / AUDIO_ENCODER_FILE
    store = folder / "val.h5"
    extract(str(tiny_corpus["val"]), str(encoder_file), str(store), chunk_seconds=0, progress=False)
    captions = read_manifest(tiny_corpus["val"]).captions
    vocab = Vocabulary.build(c for caps in captions.values() for c in caps)
    frame_dim = open_store(store).attrs["frame_dim"]
    attrs = {"encoder": open_store(store).attrs["encoder"], "checkpoint_sha256": checkpoint_sha256(encoder_file),
             "frame_dim": frame_dim}
    captioner = save_random_captioner(folder / "captioner.pt", vocab, "gru", frame_dim, attrs, seed=3)
    return {"folder": folder, "encoder": encoder_file, "retrieval": trained / "best.pt", "store": store,
            "captioner": captioner, "val": tiny_corpus["val"], "references": tiny_corpus["val"],
            "audio": sorted(p for p in (Path(e.path) for e in read_manifest(tiny_corpus["val"]).audio))}


def test_store_records_the_weights_the_reranker_checks(setup):
    reranker = Reranker.load(setup["retrieval"])
    assert open_store(setup["store"]).attrs["encoder_weights_sha256"] == reranker.encoder_weights_sha256


def test_a_large_weight_picks_the_most_similar_candidate(setup, tmp_path):
    out = tmp_path / "pred.json"
    decode(str(setup["captioner"]), str(setup["store"]), str(out), beam_size=4, max_len=8,
           rerank=str(setup["retrieval"]), rerank_weight=HUGE)
    chosen = {r["audio_id"]: r["caption"] for r in json.loads(out.read_text())}
    scorer, vocab, _ = load_ensemble([setup["captioner"]])
    store, reranker = open_store(setup["store"]), Reranker.load(setup["retrieval"])
    with torch.inference_mode():
        ids, hyps = store_hypotheses(scorer, store, vocab, beam_size=4, max_len=8)
    candidates = candidate_captions(hyps, vocab)
    clips = torch.stack([torch.from_numpy(store.clip(i)) for i in ids]).float()
    similarity = reranker.similarities(clips, candidates)
    best = [cands[int(row.argmax())] for cands, row in zip(candidates, similarity)]
    assert [chosen[i] for i in ids] == best
    decode(str(setup["captioner"]), str(setup["store"]), str(tmp_path / "plain.json"), beam_size=4, max_len=8)
    plain = {r["audio_id"]: r["caption"] for r in json.loads((tmp_path / "plain.json").read_text())}
    assert plain != chosen  # on 18 clips with 4 candidates each, similarity changes some choice


def test_auto_chooses_weight_and_norm_on_validation_and_writes_variants(setup, tmp_path):
    out = tmp_path / "pred.json"
    result = decode(str(setup["captioner"]), str(setup["store"]), str(out), beam_size=3, max_len=8,
                    length_norm="auto", rerank=str(setup["retrieval"]), val_features=str(setup["store"]),
                    val_references=str(setup["references"]), references=str(setup["references"]), variants=True)
    record = json.loads(decoding_record_path(out).read_text())
    grid = {(r["length_norm"], r["rerank_weight"]): r["cider_d"] for r in record["validation_cider_d"]}
    assert set(grid) == {(a, w) for a in LENGTH_NORMS for w in RERANK_WEIGHTS}
    assert grid[record["length_norm"], record["rerank_weight"]] == max(grid.values())
    assert (result["length_norm"], result["rerank_weight"]) == (record["length_norm"], record["rerank_weight"])
    assert record["variants"]["plain"] == {"length_norm": 0.0, "rerank_weight": 0.0}
    no_rerank = record["variants"]["no_rerank"]
    assert grid[no_rerank["length_norm"], 0.0] == max(c for (a, w), c in grid.items() if w == 0.0)
    for name in ("plain", "no_rerank"):
        assert len(json.loads(variant_path(out, name).read_text())) == len(json.loads(out.read_text()))


def test_clip_vectors_of_another_encoder_are_refused(setup, tmp_path):
    other, _ = write_split(tmp_path, "other", 3, seed=0)
    with pytest.raises(ValueError, match=r"other\.h5: its clip vectors are not from re-ranker .*best\.pt"):
        from captioning.decode import store_similarity

        scorer, vocab, _ = load_ensemble([setup["captioner"]])
        store = open_store(other)
        with torch.inference_mode():
            ids, hyps = store_hypotheses(scorer, open_store(setup["store"]), vocab, beam_size=2, max_len=4)
        store_similarity(Reranker.load(setup["retrieval"]), store, ids, hyps, vocab)
    torch.manual_seed(5)
    stranger = build_audio_encoder("cnn6", sample_rate=16000, width=0.125)
    save_audio_encoder(stranger, tmp_path / "stranger.pt")
    attrs = {"encoder": "cnn6", "checkpoint_sha256": checkpoint_sha256(tmp_path / "stranger.pt"),
             "frame_dim": stranger.frame_dim}
    _, vocab, _ = load_ensemble([setup["captioner"]])
    captioner = save_random_captioner(tmp_path / "c.pt", vocab, "gru", stranger.frame_dim, attrs, seed=0)
    with pytest.raises(ValueError, match=r"audio encoder .*stranger\.pt: its clip vectors are not from re-ranker"):
        make_bundle(str(tmp_path / "stranger.pt"), str(captioner), str(tmp_path / "b.pt"),
                    rerank=str(setup["retrieval"]), rerank_weight=1.0)


def test_weight_without_reranker_is_refused(setup, tmp_path):
    with pytest.raises(ValueError, match="give --rerank"):
        decode(str(setup["captioner"]), str(setup["store"]), str(tmp_path / "p.json"), rerank_weight=2.0)
    with pytest.raises(ValueError, match="give --rerank"):
        make_bundle(str(setup["encoder"]), str(setup["captioner"]), str(tmp_path / "b.pt"), rerank_weight=2.0)


def test_infer_and_bundle_rerank_as_decode_does(setup, tmp_path):
    decode(str(setup["captioner"]), str(setup["store"]), str(tmp_path / "decode.json"), beam_size=4, max_len=8,
           rerank=str(setup["retrieval"]), rerank_weight=HUGE)
    by_decode = {r["audio_id"]: r["caption"] for r in json.loads((tmp_path / "decode.json").read_text())}
    files = [str(p) for p in setup["audio"]]
    separate = infer(*files, audio_encoder=str(setup["encoder"]), captioners=str(setup["captioner"]),
                     rerank=str(setup["retrieval"]), rerank_weight=HUGE, beam_size=4, max_len=8, chunk_seconds=0,
                     progress=False)["captions"]
    bundle = make_bundle(str(setup["encoder"]), str(setup["captioner"]), str(tmp_path / "bundle.pt"), beam_size=4,
                         max_len=8, chunk_seconds=0, rerank=str(setup["retrieval"]), rerank_weight=HUGE)
    assert load_bundle(bundle).reranker is not None
    bundled = infer(*files, bundle=str(bundle), progress=False)["captions"]
    by_id = {Path(f).stem: c for f, c in separate.items()}
    assert by_id == {Path(f).stem: c for f, c in bundled.items()}
    assert by_id == by_decode
