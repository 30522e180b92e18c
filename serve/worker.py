"""One inference at a time on a thread of its own, with a bounded wait line and a timeout per request.

Models run on the CPU, where two inferences at once only slow each other down; the event loop stays free (so
``/health`` answers while a clip is captioned). A request that would make more than ``max_waiting`` wait is refused
at once (:class:`Busy`), and one waiting longer than ``timeout`` in all is dropped (a job not started yet is
cancelled; a running one cannot be, so it finishes and still holds its place)."""
from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Busy(Exception):
    """The wait line is full; ``retry_after`` (s) estimates when a place frees up."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy, retry after {retry_after} s")
        self.retry_after = retry_after


class Worker:
    def __init__(self, max_waiting: int, timeout: float) -> None:
        self.max_waiting, self.timeout = max_waiting, timeout
        self.pending = 0  # jobs submitted and not finished: the running one and those waiting
        self.seconds = 1.0  # running mean of a job's time, for Retry-After
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @property
    def waiting(self) -> int:
        return max(self.pending - 1, 0)

    def _finished(self, seconds: float | None) -> None:  # on the event loop
        self.pending -= 1
        if seconds is not None:
            self.seconds = 0.8 * self.seconds + 0.2 * seconds

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the inference thread; Busy when the line is full, TimeoutError after ``timeout``."""
        if self.pending > self.max_waiting:
            raise Busy(max(1, math.ceil(self.seconds * self.pending)))
        loop = asyncio.get_running_loop()
        self.pending += 1

        def job() -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                loop.call_soon_threadsafe(self._finished, time.perf_counter() - start)

        future = self._pool.submit(job)
        # a job cancelled before it started never runs `job`, so it frees its place here
        future.add_done_callback(lambda f: f.cancelled() and loop.call_soon_threadsafe(self._finished, None))
        return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
