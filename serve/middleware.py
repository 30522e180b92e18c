"""Small ASGI middlewares: a request-body cap enforced while the body is read (JSON 413, unlike the plain text of
Starlette's own), a deadline for each piece of a body (408), and one log line per request."""
from __future__ import annotations

import asyncio
import logging
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("serve")


class BodyTooLarge(HTTPException):
    """An HTTP error, so that FastAPI's body parsing passes it on instead of calling it a parse error."""

    def __init__(self, reason: str) -> None:
        super().__init__(413, reason)


class BodyLimit:
    """Refuse a request whose body exceeds ``limit(path) -> (bytes, reason)``: at once when its Content-Length says
    so, else by :class:`BodyTooLarge` raised from ``receive`` as soon as the count passes it (the app turns it into a
    413), so nothing past the limit is ever buffered."""

    def __init__(self, app: ASGIApp, limit) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, reason = self.limit(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"error": reason}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(reason)
            return message

        await self.app(scope, counted, send)


class BodyTimeout(HTTPException):
    """408 and the connection closed: what is left of the body may still come, and would be read as a request."""

    def __init__(self, reason: str) -> None:
        super().__init__(408, reason, headers={"Connection": "close"})


class BodyDeadline:
    """Raise :class:`BodyTimeout` from ``receive`` when the next piece of a request body takes longer than
    ``seconds`` to come: a client that announces a body and stops sending it would otherwise hold its request for
    good (one that trickles it faster is bounded by the body limit and the server's connection cap). Once the body
    is complete ``receive`` is passed through as it is: then it waits for the client to disconnect, for as long as
    a response streams."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                raise BodyTimeout(f"the request body stopped coming: nothing for {self.seconds:g} s") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)


class RequestLog:
    """``METHOD path status ms`` for every HTTP request, on the ``serve`` logger."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # 500 unless a response starts

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            log.info("%s %s %d %.0fms", scope["method"], scope["path"], status, 1000 * (time.perf_counter() - start))
