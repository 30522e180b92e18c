"""The JSON API over real tiny models, through FastAPI's TestClient: caption, search, similar clips, zero-shot
labels, audio files, health and the page."""
from __future__ import annotations

import tempfile
from pathlib import Path

import soundfile as sf

from features.manifest import read_manifest
from tests.serve.conftest import clip_of


def upload(path, name=None):
    return {"file": (name or path.name, path.read_bytes(), "audio/wav")}


def _upload_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("aactk-serve-*"))


def test_caption(client, library, models):
    words = set(models["pipeline"].vocab.words)
    before = _upload_folders()
    for kind in ("low", "noise"):
        r = client.post("/api/caption", files=upload(clip_of(library, kind)), data={"beam_size": "3"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["beam_size"] == 3 and body["silent"] is False
        assert body["audio"]["format"] == "WAV" and 1.0 <= body["audio"]["duration"] <= 2.0
        assert body["caption"] and set(body["caption"].split()) <= words
        assert body["spectrogram"].startswith("data:image/png;base64,")  # a picture of the clip beside it
    assert _upload_folders() == before  # each upload's folder deleted after its request
    # the bundle's own beam size (2) when none is asked for
    assert client.post("/api/caption", files=upload(clip_of(library, "low"))).json()["beam_size"] == 2


def test_search_ranks_the_library_and_links_each_result(client, library, tiny_corpus):
    r = client.post("/api/search", json={"query": "a high pitched beep sounds", "top": 5})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    scores = [x["score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["file"].startswith("tones/")
    captions = read_manifest(tiny_corpus["val"]).captions
    for x in results[:2]:
        audio = client.get(x["url"])
        assert audio.status_code == 200 and audio.content == (library / x["file"]).read_bytes()
        assert audio.headers["content-type"].startswith("audio/")
        # what a person sees of it: the split's first caption, its length, its spectrogram
        assert x["caption"] == captions[Path(x["file"]).stem][0]
        assert x["duration"] == round(sf.info(str(library / x["file"])).duration, 2)
        picture = client.get(x["spectrogram"])
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    assert client.get("/spectrogram/tones/none.wav").status_code == 404
    assert client.get("/spectrogram/../../etc/passwd").status_code == 404


def test_similar_finds_the_clip_itself(client, library):
    clip = clip_of(library, "chirp", 1)
    r = client.post("/api/similar", files=upload(clip), data={"top": "3"})
    assert r.status_code == 200, r.text
    best = r.json()["results"][0]
    assert best["file"] == clip.relative_to(library).as_posix() and best["score"] > 0.999
    assert len(r.json()["results"]) == 3


def test_labels_rank_every_label(client, library):
    labels = ["a low hum drones", "a high pitched beep", "static hisses", "a clock ticks"]
    r = client.post("/api/labels", files=upload(clip_of(library, "high")), data={"labels": ", ".join(labels)})
    assert r.status_code == 200, r.text
    ranked = r.json()["labels"]
    assert sorted(x["label"] for x in ranked) == sorted(labels)
    assert [x["score"] for x in ranked] == sorted((x["score"] for x in ranked), reverse=True)


def test_health_and_the_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["captioner"] is True and health["index"] is True
    assert health["index_size"] == 18 and health["devices"] == {"captioner": "cpu", "index": "cpu"}
    assert health["queue"] == {"running": 0, "waiting": 0, "max_waiting": 4}
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text
    for name in ("app.js", "wav.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_unknown_route_is_a_json_404(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_captions_with_onnx_runtime_equal_torch(client, library, bundle_file, models, tmp_path):
    """A server over the bundle's ONNX export (``python -m serve --onnx_dir``) gives the captions torch gives."""
    from fastapi.testclient import TestClient

    from captioning.bundle import load_bundle
    from captioning.export import export_bundle
    from serve import create_app

    export_bundle(bundle_file, tmp_path / "onnx")
    onnx = TestClient(create_app(load_bundle(bundle_file, runtime="onnx", onnx_dir=tmp_path / "onnx")))
    for kind in ("low", "chirp", "noise"):
        clip = clip_of(library, kind)
        assert (onnx.post("/api/caption", files=upload(clip)).json()["caption"]
                == client.post("/api/caption", files=upload(clip)).json()["caption"])


def test_a_bundle_with_a_reranker_reranks_on_the_server_and_with_onnx(trained, library, bundle_file, tmp_path):
    """A bundle made with --rerank keeps the retrieval model: the server's captions (torch or ONNX Runtime) are the
    re-ranked ones captioning.infer gives with that bundle."""
    from fastapi.testclient import TestClient

    from captioning.bundle import load_bundle, make_bundle
    from captioning.export import export_bundle
    from captioning.infer import infer
    from serve import create_app

    reranked = make_bundle(str(trained / "audio_encoder.pt"), str(bundle_file.parent / "captioner.pt"),
                           str(tmp_path / "reranked.pt"), beam_size=4, max_len=12, rerank=str(trained / "best.pt"),
                           rerank_weight=1e6)
    clips = [clip_of(library, kind) for kind in ("low", "chirp", "noise", "pulse")]
    expected = infer(*map(str, clips), bundle=str(reranked), progress=False)["captions"]
    plain = infer(*map(str, clips), bundle=str(bundle_file), beam_size=4, progress=False)["captions"]
    assert expected != plain  # the similarity changes some choice
    export_bundle(reranked, tmp_path / "onnx")
    for pipeline in (load_bundle(reranked), load_bundle(reranked, runtime="onnx", onnx_dir=tmp_path / "onnx")):
        assert pipeline.reranker is not None
        client = TestClient(create_app(pipeline))
        assert {c.name: client.post("/api/caption", files=upload(c)).json()["caption"] for c in clips} == expected
