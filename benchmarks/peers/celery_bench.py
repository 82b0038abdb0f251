"""Celery adapter (Redis broker, no result backend), run from ``benchmarks/.venv``.

The worker is Celery's default prefork pool with its default concurrency, the number
of CPUs, started in-process with ``app.worker_main``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from celery import Celery
from redis import Redis

from benchmarks.common import (
    COUNTER,
    QUEUE,
    Adapter,
    due_times,
    main,
    record_lateness_sync,
    redis_url,
)

CONCURRENCY = os.cpu_count() or 1  # celery worker --concurrency default
app = Celery("bench", broker=redis_url())
app.conf.task_default_queue = QUEUE
app.conf.broker_connection_retry_on_startup = True
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


@app.task(name="bench.incr")
def incr() -> None:
    _redis().incr(COUNTER)


@app.task(name="bench.late")
def late(due: float) -> None:
    record_lateness_sync(_redis(), due)


def fill(n: int) -> None:
    for _ in range(n):
        incr.delay()


def work(concurrency: int, target: int) -> None:
    app.worker_main(["worker", "--pool=prefork", f"--concurrency={concurrency}",
                     "--loglevel=INFO", f"--queues={QUEUE}"])


def enqueue(n: int, batch: bool) -> float:
    incr.delay()
    started = time.perf_counter()
    for _ in range(n):
        incr.delay()
    return time.perf_counter() - started


def delayed(n: int, start: float) -> None:
    for due in due_times(n, start):
        late.apply_async(args=(due,), eta=datetime.fromtimestamp(due, tz=UTC))


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=False, has_delay=True)

if __name__ == "__main__":
    main(ADAPTER)
