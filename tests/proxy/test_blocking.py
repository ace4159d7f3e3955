"""BlockingRunner: a stuck back end holds only its own threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mailproxy_core.proxy.blocking import BlockingRunner


def test_result_and_error_reach_the_caller() -> None:
    async def main() -> None:
        runner = BlockingRunner("test", 2)
        assert await runner.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await runner.run(lambda: 1 / 0)

    asyncio.run(main())


def test_stuck_calls_hold_at_most_workers_threads() -> None:
    release = threading.Event()

    async def main() -> None:
        stuck = BlockingRunner("stuck", 2)
        other = BlockingRunner("other", 2)
        for _ in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await stuck.run(release.wait)
        with pytest.raises(TimeoutError, match="threads are still busy"):
            await stuck.run(lambda: None)
        # Another back end is not delayed by the stuck one.
        assert await other.run(lambda: "ok") == "ok"

    try:
        asyncio.run(main())
    finally:
        release.set()


def test_threads_are_daemons() -> None:
    seen: list[bool] = []

    async def main() -> None:
        runner = BlockingRunner("daemon", 1)
        await runner.run(lambda: seen.append(threading.current_thread().daemon))

    asyncio.run(main())
    assert seen == [True]
