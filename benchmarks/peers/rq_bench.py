"""RQ adapter (``rq.Queue`` / ``rq.SimpleWorker``, no fork per job), from ``benchmarks/.venv``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, SimpleWorker

from benchmarks.common import (
    BATCH,
    COUNTER,
    QUEUE,
    Adapter,
    due_times,
    main,
    record_lateness_sync,
    redis_url,
)

CONCURRENCY = 1  # a SimpleWorker runs one job at a time
INCR = "benchmarks.peers.rq_bench.incr"
LATE = "benchmarks.peers.rq_bench.late"
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


def incr() -> None:
    _redis().incr(COUNTER)


def late(due: float) -> None:
    record_lateness_sync(_redis(), due)


def _queue() -> Queue:
    return Queue(QUEUE, connection=Redis.from_url(redis_url()))


def _enqueue_many(queue: Queue, n: int) -> None:
    for first in range(0, n, BATCH):
        queue.enqueue_many([Queue.prepare_data(INCR) for _ in range(min(BATCH, n - first))])


def fill(n: int) -> None:
    _enqueue_many(_queue(), n)


def work(concurrency: int, target: int) -> None:
    queue = _queue()
    worker = SimpleWorker([queue], connection=queue.connection)
    worker.work(with_scheduler=True)


def enqueue(n: int, batch: bool) -> float:
    queue = _queue()
    queue.enqueue(INCR)
    started = time.perf_counter()
    if batch:
        _enqueue_many(queue, n)
    else:
        for _ in range(n):
            queue.enqueue(INCR)
    return time.perf_counter() - started


def delayed(n: int, start: float) -> None:
    queue = _queue()
    for due in due_times(n, start):
        queue.enqueue_at(datetime.fromtimestamp(due, tz=UTC), LATE, due)


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=True, has_delay=True)

if __name__ == "__main__":
    main(ADAPTER)
