"""Blocking back-end calls, each back end in threads of its own.

``asyncio.to_thread`` shares one executor among all callers, and the
interpreter waits for its threads at exit. A directory server that accepts
a connection and then never answers would hold those threads: logins of
every other AAA group would queue behind it, and the process would not
exit after SIGTERM. :class:`BlockingRunner` gives each back end a bounded
number of daemon threads instead, so a stuck back end only delays its own
logins (until their timeout) and never the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


class BlockingRunner:
    """Run blocking calls of one back end, at most ``workers`` at a time.

    :param name: the back end's name, used in thread names.
    :param workers: calls that may run at once; later calls wait for one to
        finish, so the caller's timeout covers the wait as well.
    """

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = workers
        # Threads alive, including those whose caller gave up: a stuck back
        # end can never hold more than ``workers`` threads.
        self._threads = threading.BoundedSemaphore(workers)
        # Callers waiting for a thread; created in the running event loop.
        self._queue: asyncio.Semaphore | None = None

    async def run(self, function: Callable[..., _T], *arguments: object) -> _T:
        """Call ``function(*arguments)`` in a daemon thread and await it.

        Cancelling the await (for instance by a timeout) abandons the call:
        its thread runs on until the function returns, holding one slot.
        """
        if self._queue is None:
            self._queue = asyncio.Semaphore(self._workers)
        async with self._queue:
            if not self._threads.acquire(blocking=False):
                raise TimeoutError(
                    f"all {self._workers} {self._name} threads are still busy"
                )
            return await self._start(function, arguments)

    async def _start(
        self, function: Callable[..., _T], arguments: tuple[object, ...]
    ) -> _T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def deliver(result: _T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def target() -> None:
            result: _T | None = None
            error: BaseException | None = None
            try:
                result = function(*arguments)
            except BaseException as caught:
                error = caught
            # The slot is free before the caller resumes, so the next queued
            # call always finds it.
            self._threads.release()
            # An abandoned call may end after its event loop has closed.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, result, error)

        thread = threading.Thread(target=target, name=f"{self._name}-call", daemon=True)
        thread.start()
        return await future
