"""taskiq adapter (taskiq-redis ``RedisStreamBroker``), run from ``benchmarks/.venv``.

The worker is taskiq's documented programmatic receiver (``taskiq.api.run_receiver_task``)
in one process, with the CLI's default ``--max-async-tasks`` of 100. taskiq has no
per-message delay on this broker (delays need the separate scheduler and a schedule
source), so the delayed row is n/a.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from redis.asyncio import Redis
from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

from benchmarks.common import COUNTER, QUEUE, Adapter, main, redis_url

CONCURRENCY = 100  # taskiq worker --max-async-tasks default
broker = RedisStreamBroker(url=redis_url(), queue_name=QUEUE)
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


@broker.task(task_name="bench.incr")
async def incr() -> None:
    await _redis().incr(COUNTER)


async def fill(n: int) -> None:
    await broker.startup()
    for first in range(0, n, 200):
        await asyncio.gather(*(incr.kiq() for _ in range(min(200, n - first))))
    await broker.shutdown()


async def work(concurrency: int, target: int) -> None:
    await broker.startup()
    await run_receiver_task(broker, max_async_tasks=concurrency)


async def enqueue(n: int, batch: bool) -> float:
    await broker.startup()
    await incr.kiq()
    started = time.perf_counter()
    for _ in range(n):
        await incr.kiq()
    elapsed = time.perf_counter() - started
    await broker.shutdown()
    return elapsed


def delayed(n: int, start: float) -> None:
    raise SystemExit("taskiq: no per-message delay on RedisStreamBroker")


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=False, has_delay=False)

if __name__ == "__main__":
    main(ADAPTER)
