"""SAQ adapter (``saq.Queue`` / ``saq.Worker`` on Redis), run from ``benchmarks/.venv``."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from saq import Queue, Worker

from benchmarks.common import (
    COUNTER,
    QUEUE,
    Adapter,
    due_times,
    main,
    record_lateness_async,
    redis_url,
)

CONCURRENCY = 10  # saq.Worker's default
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


async def incr(ctx: Any) -> None:
    await _redis().incr(COUNTER)


async def late(ctx: Any, *, due: float) -> None:
    await record_lateness_async(_redis(), due)


def _queue() -> Queue:
    return Queue.from_url(redis_url(), name=QUEUE)


async def fill(n: int) -> None:
    queue = _queue()
    await queue.connect()
    for first in range(0, n, 200):
        await asyncio.gather(*(queue.enqueue("incr") for _ in range(min(200, n - first))))
    await queue.disconnect()


async def work(concurrency: int, target: int) -> None:
    queue = _queue()
    worker = Worker(queue, functions=[incr, late], concurrency=concurrency)
    await worker.start()


async def enqueue(n: int, batch: bool) -> float:
    queue = _queue()
    await queue.connect()
    await queue.enqueue("incr")
    started = time.perf_counter()
    for _ in range(n):
        await queue.enqueue("incr")
    elapsed = time.perf_counter() - started
    await queue.disconnect()
    return elapsed


async def delayed(n: int, start: float) -> None:
    queue = _queue()
    await queue.connect()
    for due in due_times(n, start):
        # ``scheduled`` is documented as epoch seconds; a float keeps the sub-second due time
        await queue.enqueue("late", due=due, scheduled=due)
    await queue.disconnect()


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=False, has_delay=True)

if __name__ == "__main__":
    main(ADAPTER)
