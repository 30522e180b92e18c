"""Connections the server will hold: uvicorn's h11 protocol with a cap on open connections and a deadline for each
request's headers, the two things uvicorn itself lacks. Its ``limit_concurrency`` answers 503 only once a request's
headers have arrived, so connections that send nothing are held, and nothing bounds how long headers may take: a
thousand clients sending nothing would keep a thousand connections (and file descriptors) open for good.

The wait for a request body the app reads is bounded in the app (:class:`serve.middleware.BodyDeadline`), where it
can be answered with a JSON 408."""
from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("serve")


def raw_response(status: int, phrase: str, reason: str, headers: str = "") -> bytes:
    """A whole ``{"error": reason}`` response that closes the connection, written before any request was parsed
    (h11 will not send a response to a request it has not seen)."""
    body = json.dumps({"error": reason}).encode()
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n{headers}\r\n")
    return head.encode("ascii") + body


def guarded_protocol(read_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol (for ``uvicorn.run(http=...)``) where

    - a connection beyond ``max_connections`` open is answered 503 and closed at once, before anything is read;
    - a client has ``read_timeout`` seconds from opening the connection (or from its previous response) to send a
      request's headers, and as long to finish a body the app answered without reading; past that the connection
      is closed, after a 408 if part of a request's head had come.
    """
    if not read_timeout > 0:
        raise ValueError(f"Invalid read_timeout. (expected seconds > 0, found {read_timeout!r})")
    if not max_connections >= 1:
        raise ValueError(f"Invalid max_connections. (expected at least 1, found {max_connections!r})")

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:  # this one included
                log.warning("refused a connection: %d open (at most %d)", len(self.connections) - 1, max_connections)
                transport.write(raw_response(503, "Service Unavailable", f"too many connections open (at most "
                                             f"{max_connections}); try again in a moment", "retry-after: 1\r\n"))
                transport.close()
                return
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # unless a pipelined request already started (a new cycle, not complete): wait for the next one
            if not self.transport.is_closing() and self.cycle.response_complete:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, event) -> None:
            self._disarm()  # the connection is the WebSocket protocol's from here on
            super().handle_websocket_upgrade(event)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _arm(self) -> None:
            self._disarm()
            # the cycle as it is now: a request arriving replaces it, and then the deadline no longer applies
            self._deadline = self.loop.call_later(read_timeout, self._expired, self.cycle)

        def _expired(self, cycle) -> None:
            self._deadline = None
            if self.cycle is not cycle or self.transport.is_closing():
                return  # a request came in time: the app has it
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # part of a head, never finished
                self.transport.write(raw_response(408, "Request Timeout", f"the request's headers did not arrive "
                                                  f"within {read_timeout:g} s"))
            self.transport.close()

    return GuardedH11Protocol
