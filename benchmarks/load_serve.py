"""Load on the server: concurrent clients on the caption and search endpoints, then a burst beyond the queue.

    python benchmarks/load_serve.py --url http://127.0.0.1:8000 [--clients 8] [--seconds 60]
    python benchmarks/load_serve.py --bundle B.pt --index INDEX.h5 [--max_waiting 8]   # starts its own server

Phase 1: ``clients`` clients, each alternating a caption of a clip (``--clip``, else a generated 10-s one) and a
text search, for ``seconds``; a client told 503 waits its Retry-After. Prints requests, failures, 503s and
p50/p95 latency per endpoint. Phase 2: ``burst`` caption requests at once (default: twice what the queue holds),
counting 200s and 503s, with /health asked during and after. Only this machine is addressed (127.0.0.1).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import httpx
import numpy as np
import soundfile as sf

QUERIES = ["a dog barks far away", "a high pitched beep sounds", "static hisses loudly", "a siren sweeps upward",
           "a clock ticks rapidly", "a low hum drones steadily", "rain falls on a roof", "short beeps repeat"]


def _clip(seconds: float = 10.0, rate: int = 16000) -> bytes:
    """A generated clip: a tone sweeping upward over noise, as WAV bytes."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (300 + 80 * t) * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        sf.write(f.name, x.astype(np.float32), rate)
        return Path(f.name).read_bytes()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _client(http: httpx.AsyncClient, clip: bytes, until: float, k: int, stats: dict) -> None:
    i = k
    while time.monotonic() < until:
        endpoint = ("caption", "search")[i % 2]
        start = time.perf_counter()
        try:
            if endpoint == "caption":
                r = await http.post("/api/caption", files={"file": ("clip.wav", clip, "audio/wav")})
            else:
                r = await http.post("/api/search", json={"query": QUERIES[i % len(QUERIES)], "top": 10})
            status = r.status_code
        except httpx.HTTPError as err:
            status, r = type(err).__name__, None
        ms = 1000 * (time.perf_counter() - start)
        s = stats[endpoint]
        s["requests"] += 1
        if status == 200:
            s["ms"].append(ms)
        elif status == 503:
            s["busy"] += 1
            await asyncio.sleep(min(float(r.headers.get("Retry-After", 1)), 5.0))
        else:
            s["failures"] += 1
            s["errors"][str(status)] = s["errors"].get(str(status), 0) + 1
        i += 1


async def _sustained(url: str, clip: bytes, clients: int, seconds: float) -> dict:
    stats = {e: {"requests": 0, "failures": 0, "busy": 0, "ms": [], "errors": {}} for e in ("caption", "search")}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(http, clip, until, k, stats) for k in range(clients)))
    return stats


async def _burst(url: str, clip: bytes, n: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=n + 2)) as http:
        posts = [asyncio.create_task(http.post("/api/caption", files={"file": ("clip.wav", clip, "audio/wav")}))
                 for _ in range(n)]
        await asyncio.sleep(0.2)
        start = time.perf_counter()
        during = await http.get("/health")
        health_ms = 1000 * (time.perf_counter() - start)
        codes: dict[str, int] = {}
        for r in await asyncio.gather(*posts, return_exceptions=True):
            key = str(r.status_code) if isinstance(r, httpx.Response) else type(r).__name__
            codes[key] = codes.get(key, 0) + 1
        after = await http.get("/health")
    return {"codes": codes, "health_during": (during.status_code, health_ms, during.json()["queue"]),
            "health_after": after.status_code}


def _start(bundle: str | None, index: str | None, max_waiting: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "serve", "--port", str(port), "--max_waiting", str(max_waiting),
            "--log_level", "warning"]
    args += ["--bundle", bundle] if bundle else []
    args += ["--index", index] if index else []
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(args, cwd=repo, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        if proc.poll() is not None:
            raise RuntimeError("the server exited while starting")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError("the server did not answer /health within 2 minutes")


def main(url: str | None = None, bundle: str | None = None, index: str | None = None, clients: int = 8,
         seconds: float = 60.0, clip: str | None = None, burst: int | None = None, max_waiting: int = 8) -> None:
    """Load a running server (``url``) or one started here from ``bundle``/``index`` with ``max_waiting``."""
    proc = None
    if url is None:
        proc, url = _start(bundle, index, max_waiting)
    try:
        health = httpx.get(url + "/health", timeout=5).json()
        queue = health["queue"]["max_waiting"] + 1
        audio = Path(clip).read_bytes() if clip else _clip()
        print(f"server {url}: captioner {health['captioner']}, index of {health['index_size']} files, "
              f"queue {queue} (1 running + {queue - 1} waiting)")
        print(f"phase 1: {clients} clients for {seconds:g} s, each alternating /api/caption and /api/search")
        stats = asyncio.run(_sustained(url, audio, clients, seconds))
        print(f"{'endpoint':10} {'requests':>8} {'ok':>6} {'503':>5} {'failed':>6} {'p50 ms':>8} {'p95 ms':>8}  "
              f"{'ok/s':>6}")
        for name, s in stats.items():
            print(f"{name:10} {s['requests']:8d} {len(s['ms']):6d} {s['busy']:5d} {s['failures']:6d} "
                  f"{_percentile(s['ms'], 50):8.0f} {_percentile(s['ms'], 95):8.0f}  {len(s['ms']) / seconds:6.2f}"
                  + (f"  errors {s['errors']}" if s["errors"] else ""))
        n = burst or 2 * queue
        result = asyncio.run(_burst(url, audio, n))
        status, ms, q = result["health_during"]
        print(f"phase 2: {n} captions at once against a queue of {queue}: {result['codes']}; "
              f"/health during the burst {status} in {ms:.0f} ms (queue {q}), after it {result['health_after']}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    fire.Fire(main)
