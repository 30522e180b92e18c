"""What a client may hold: ``python -m serve`` run for real, talked to over raw sockets. A request's headers must
arrive within ``--read_timeout``, a body must keep coming, and connections beyond ``--max_connections`` are refused
at once; the server answers normal requests all along."""
from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.serve.conftest import running_server

READ_TIMEOUT, CAP = 1.0, 4
WAIT = READ_TIMEOUT + 2.5  # longest a test waits for the server to act: the deadline and some slack for a busy CPU


@pytest.fixture(scope="module")
def guarded(index_file, tmp_path_factory):
    """The server over the index alone (quicker to start), with a 1-s read deadline and at most 4 connections."""
    log = tmp_path_factory.mktemp("guarded") / "serve.log"
    with running_server(log, "--index", str(index_file), "--read_timeout", str(READ_TIMEOUT),
                        "--max_connections", str(CAP)) as (base, port):
        yield base, port


def until_closed(port: int, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` on a new connection, then read until the server closes it; what came and the seconds it took.
    Fails if the connection is still open after ``WAIT`` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        start, received = time.monotonic(), b""
        s.sendall(data)
        while time.monotonic() - start < WAIT:
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                return received, time.monotonic() - start
            received += chunk
    pytest.fail(f"the connection was still open after {WAIT:g} s (received {received!r})")


def answers(base: str) -> None:
    r = httpx.post(f"{base}/api/search", json={"query": "a dog barks", "top": 3}, timeout=30)
    assert r.status_code == 200 and len(r.json()["results"]) == 3, r.text


def test_a_body_announced_and_not_sent_is_cut_off(guarded):
    base, port = guarded
    head = "{} {} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    # a route that reads the body: 408 (JSON) once nothing came for the deadline, and the connection closed
    received, seconds = until_closed(port, head.format("POST", "/api/search").encode())
    assert received.startswith(b"HTTP/1.1 408 ") and b"stopped coming" in received, received
    assert READ_TIMEOUT - 0.1 <= seconds < WAIT
    # part of the body, then nothing: the same
    received, seconds = until_closed(port, head.format("POST", "/api/search").encode() + b'{"query": "a do')
    assert received.startswith(b"HTTP/1.1 408 ") and READ_TIMEOUT - 0.1 <= seconds < WAIT, received
    # a route that answers without reading it: answered, then closed at the deadline (not held for the body)
    received, seconds = until_closed(port, head.format("GET", "/health").encode())
    assert received.startswith(b"HTTP/1.1 200 ") and READ_TIMEOUT - 0.1 <= seconds < WAIT, received
    answers(base)


def test_headers_must_arrive_within_the_deadline(guarded):
    base, port = guarded
    # nothing at all: closed without a word
    received, seconds = until_closed(port, b"")
    assert received == b"" and READ_TIMEOUT - 0.1 <= seconds < WAIT
    # half a request's head: 408
    received, seconds = until_closed(port, b"GET /health HTTP/1.1\r\nHost: test\r\n")
    assert received.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive" in received, received
    # a header line every 0.2 s: a deadline, not an idle timeout, so the trickle does not keep it open
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
        start, closed = time.monotonic(), False
        s.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        while not closed and time.monotonic() - start < WAIT:
            try:
                s.recv(4096)  # the 408, or the end: either way the server has let go
                closed = True
            except TimeoutError:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:  # reset: the server has closed it
                    closed = True
            except OSError:
                closed = True
        assert closed, f"a trickle of header lines kept the connection open for {WAIT:g} s"
        assert time.monotonic() - start >= READ_TIMEOUT - 0.1
    answers(base)


def test_connections_beyond_the_cap_are_refused_at_once(guarded):
    base, port = guarded
    limits = httpx.get(f"{base}/health").json()["limits"]
    assert limits["read_timeout"] == READ_TIMEOUT and limits["max_connections"] == CAP
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(CAP)]
    try:
        received, seconds = until_closed(port, b"")  # one more: 503 before it sends anything
        assert received.startswith(b"HTTP/1.1 503 ") and b"too many connections" in received, received
        assert b"retry-after: 1" in received.lower() and seconds < READ_TIMEOUT
    finally:
        for s in held:
            s.close()
    # the held ones gone, the server answers again (as soon as it has seen them close)
    start = time.monotonic()
    while True:
        try:
            return answers(base)
        except (AssertionError, httpx.TransportError):
            if time.monotonic() - start > WAIT:
                raise
            time.sleep(0.1)
