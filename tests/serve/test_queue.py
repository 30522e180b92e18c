"""The bounded queue: one inference at a time, at most ``max_waiting`` behind it, 503 with Retry-After beyond that;
a timeout per request; /health answers while the worker is busy."""
from __future__ import annotations

import asyncio

import httpx

from serve import Limits, create_app
from tests.serve.conftest import clip_of


async def _burst(app, clip: bytes, n: int) -> tuple[list[httpx.Response], dict]:
    """``n`` caption requests at once, and /health asked while they run."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        posts = [asyncio.create_task(http.post("/api/caption", files={"file": ("c.wav", clip)})) for _ in range(n)]
        while app.state.worker.pending == 0:  # until the first is running
            await asyncio.sleep(0.005)
        health = (await http.get("/health")).json()
        return list(await asyncio.gather(*posts)), health


def test_queue_full_is_503_and_the_server_still_answers(models, library):
    app = create_app(models["pipeline"], models["index"], Limits(max_waiting=1))
    clip = clip_of(library, "noise").read_bytes()
    responses, health = asyncio.run(_burst(app, clip, 6))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) == {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1 and "busy" in r.json()["error"]
    assert health["status"] == "ok" and health["queue"]["running"] == 1  # answered while captioning
    # afterwards: the queue is empty and requests succeed again
    assert app.state.worker.pending == 0
    again, _ = asyncio.run(_burst(app, clip, 1))
    assert again[0].status_code == 200 and again[0].json()["caption"]


def test_timeout_is_504(models, library):
    app = create_app(models["pipeline"], models["index"], Limits(timeout=0.001))
    clip = clip_of(library, "noise").read_bytes()
    responses, _ = asyncio.run(_burst(app, clip, 1))
    assert responses[0].status_code == 504 and "gave up after" in responses[0].json()["error"]
