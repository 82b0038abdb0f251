"""BullMQ adapter (the ``bullmq`` Python package), run from ``benchmarks/.venv``.

BullMQ's Worker defaults to a concurrency of 1; the no-op job is async I/O, so this
benchmark runs it at 10 (SAQ's and arq's default) — see docs/performance.md.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from bullmq import Queue, Worker
from redis.asyncio import Redis

from benchmarks.common import (
    BATCH,
    COUNTER,
    QUEUE,
    Adapter,
    due_times,
    main,
    record_lateness_async,
    redis_url,
)

CONCURRENCY = 10
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


async def process(job: Any, token: str) -> None:
    if job.name == "late":
        await record_lateness_async(_redis(), job.data["due"])
    else:
        await _redis().incr(COUNTER)


def _queue() -> Queue:
    return Queue(QUEUE, {"connection": redis_url()})


async def _add_bulk(queue: Queue, n: int) -> None:
    for first in range(0, n, BATCH):
        await queue.addBulk([{"name": "incr", "data": {}} for _ in range(min(BATCH, n - first))])


async def fill(n: int) -> None:
    queue = _queue()
    await _add_bulk(queue, n)
    await queue.close()


async def work(concurrency: int, target: int) -> None:
    Worker(QUEUE, process, {"connection": redis_url(), "concurrency": concurrency})
    await asyncio.Event().wait()


async def enqueue(n: int, batch: bool) -> float:
    queue = _queue()
    await queue.add("incr", {})
    started = time.perf_counter()
    if batch:
        await _add_bulk(queue, n)
    else:
        for _ in range(n):
            await queue.add("incr", {})
    elapsed = time.perf_counter() - started
    await queue.close()
    return elapsed


async def delayed(n: int, start: float) -> None:
    queue = _queue()
    for due in due_times(n, start):
        delay = max(0, round((due - time.time()) * 1000))
        await queue.add("late", {"due": due}, {"delay": delay})
    await queue.close()


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=True, has_delay=True)

if __name__ == "__main__":
    main(ADAPTER)
