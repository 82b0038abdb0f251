"""arq adapter (``arq.create_pool`` / ``arq.worker.Worker``), run from ``benchmarks/.venv``."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis

from benchmarks.common import (
    COUNTER,
    QUEUE,
    Adapter,
    due_times,
    main,
    record_lateness_async,
    redis_url,
)

CONCURRENCY = 10  # arq Worker max_jobs default
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


async def incr(ctx: dict[str, Any]) -> None:
    await _redis().incr(COUNTER)


async def late(ctx: dict[str, Any], due: float) -> None:
    await record_lateness_async(_redis(), due)


def _settings() -> RedisSettings:
    return RedisSettings.from_dsn(redis_url())


async def fill(n: int) -> None:
    pool = await create_pool(_settings(), default_queue_name=QUEUE)
    for first in range(0, n, 200):
        await asyncio.gather(*(pool.enqueue_job("incr") for _ in range(min(200, n - first))))
    await pool.aclose()


async def work(concurrency: int, target: int) -> None:
    worker = Worker(functions=[incr, late], redis_settings=_settings(), queue_name=QUEUE,
                    max_jobs=concurrency)
    await worker.main()


async def enqueue(n: int, batch: bool) -> float:
    pool = await create_pool(_settings(), default_queue_name=QUEUE)
    await pool.enqueue_job("incr")
    started = time.perf_counter()
    for _ in range(n):
        await pool.enqueue_job("incr")
    elapsed = time.perf_counter() - started
    await pool.aclose()
    return elapsed


async def delayed(n: int, start: float) -> None:
    pool = await create_pool(_settings(), default_queue_name=QUEUE)
    for due in due_times(n, start):
        await pool.enqueue_job("late", due, _defer_until=datetime.fromtimestamp(due, tz=UTC))
    await pool.aclose()


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=False, has_delay=True)

if __name__ == "__main__":
    main(ADAPTER)
