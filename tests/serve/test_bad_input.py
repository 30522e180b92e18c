"""Bad input over HTTP: each request is refused with a 4xx status and a reason, and the server goes on serving."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.serve.conftest import clip_of


def refused(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    reason = response.json()["error"]
    assert all(w in reason for w in words), reason
    return reason


@pytest.fixture()
def still_serving(client, library):
    """After the test's bad requests, the same app still answers health, a search and a caption."""
    yield
    assert client.get("/health").json()["status"] == "ok"
    assert len(client.post("/api/search", json={"query": "static hisses"}).json()["results"]) == 10
    good = clip_of(library, "pulse")
    assert client.post("/api/caption", files={"file": (good.name, good.read_bytes())}).json()["caption"]


def test_refused_uploads(client, still_serving, two_hours, surround_96k, tmp_path):
    for route in ("/api/caption", "/api/similar"):
        refused(client.post(route, files={"file": ("empty.wav", b"", "audio/wav")}), 400, "empty upload")
    text = b"This is a text file, not a recording.\n" * 20
    refused(client.post("/api/caption", files={"file": ("notes.wav", text)}), 415, "not a readable audio file")
    refused(client.post("/api/caption", files={"file": ("long.flac", two_hours.read_bytes())}), 422,
            "7200.0 s long", "at most 120 s")
    reason = refused(client.post("/api/similar", files={"file": ("6ch.wav", surround_96k.read_bytes())}), 422)
    assert "6 channels" in reason and "96000 Hz" in reason
    refused(client.post("/api/caption"), 422, "file")  # no file at all
    refused(client.post("/api/caption", files={"file": ("a.wav", b"x")}, data={"beam_size": "99"}), 422,
            "beam_size")


def test_upload_size_is_capped_while_reading(make_client, library):
    small = make_client(max_upload_mb=0.01)  # 10 kB; the clips are 32-64 kB
    clip = clip_of(library, "low").read_bytes()
    refused(small.post("/api/caption", files={"file": ("a.wav", clip)}), 413, "upload larger than 0.01 MB")

    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + clip + b"\r\n--xyz--\r\n")

    def chunks():  # no Content-Length: the count while reading refuses it
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    refused(small.post("/api/caption", content=chunks(), headers=headers), 413, "upload larger than 0.01 MB")
    assert small.get("/health").status_code == 200


def test_formats_can_be_narrowed(make_client, two_hours):
    wav_only = make_client(formats=("WAV",), max_seconds=10000)
    refused(wav_only.post("/api/caption", files={"file": ("x.flac", two_hours.read_bytes())}), 415, "FLAC")


def test_refused_queries(client, still_serving):
    bad = b'{"query": "caf\xe9 \xff\xfe noise", "top": 3}'  # Latin-1 bytes: not UTF-8
    refused(client.post("/api/search", content=bad, headers={"content-type": "application/json"}), 400, "UTF-8")
    refused(client.post("/api/search", content=b'{"query": "\\udcff hum"}',
                        headers={"content-type": "application/json"}), 400, "not valid Unicode")
    refused(client.post("/api/search", json={"query": "a" * 100_000}), 413, "100000 characters", "at most 500")
    refused(client.post("/api/search", json={"query": "   "}), 400, "empty query")
    refused(client.post("/api/search", json={"query": "hum", "top": 0}), 422, "top")
    refused(client.post("/api/search", json={"top": 3}), 422, "query")


def test_values_of_the_wrong_type_are_refused(client, library, still_serving):
    # JSON: a value is taken only as the type it is, never converted (`true` was taken as 1)
    for body, field, expected in [({"query": "hum", "top": True}, "top", "valid integer"),
                                  ({"query": "hum", "top": 1.5}, "top", "valid integer"),
                                  ({"query": "hum", "top": "3"}, "top", "valid integer"),
                                  ({"query": "hum", "top": None}, "top", "valid integer"),
                                  ({"query": 5}, "query", "valid string"),
                                  ({"query": ["hum"]}, "query", "valid string"),
                                  ({"query": "hum", "tpo": 3}, "tpo", "not permitted")]:
        refused(client.post("/api/search", json=body), 422, f"{field}: ", expected)
    refused(client.post("/api/search", json=["hum", 3]), 422, "body")
    # a form value is text: a whole number written in digits, and nothing else
    clip = {"file": ("a.wav", clip_of(library, "low").read_bytes())}
    for text in ("true", "1.5", "3.0", "1_000", "three"):
        refused(client.post("/api/similar", files=clip, data={"top": text}), 422, "top: ", "whole number", text)
    refused(client.post("/api/caption", files=clip, data={"beam_size": "2.0"}), 422, "beam_size: ", "whole number")
    assert len(client.post("/api/similar", files=clip, data={"top": " 3 "}).json()["results"]) == 3


def test_path_traversal(client, library, still_serving):
    # in an upload's file name: refused, and nothing written where the name points
    clip = clip_of(library, "high").read_bytes()
    target = Path(tempfile.gettempdir()).parent / "escaped.wav"
    for name in ("../../escaped.wav", f"..{Path(tempfile.gettempdir()).parent}/escaped.wav", "..\\..\\escaped.wav"):
        refused(client.post("/api/caption", files={"file": (name, clip)}), 400, "not a path")
    assert not target.exists()
    # in the audio URL: only the index's own files
    indexed = next(library.rglob("*.wav"))
    for url in ("/audio/..%2F..%2Fetc%2Fpasswd", "/audio/%2Fetc%2Fpasswd", "/audio/tones/..%2F..%2Findex.h5",
                f"/audio/{indexed}", "/audio/tones", "/audio/"):
        r = client.get(url)
        assert r.status_code == 404 and "error" in r.json(), url
    assert client.get(f"/audio/{indexed.relative_to(library).as_posix()}").status_code == 200
