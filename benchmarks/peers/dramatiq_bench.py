"""Dramatiq adapter (``RedisBroker``, an in-process ``dramatiq.Worker``), from ``benchmarks/.venv``.

One worker process with Dramatiq's default 8 worker threads (what ``dramatiq --processes 1``
runs).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
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

CONCURRENCY = 8  # dramatiq.Worker's default worker_threads
broker = RedisBroker(url=redis_url())
dramatiq.set_broker(broker)
#: One client per worker process, made on first use.
_redis: Callable[[], Redis] = functools.cache(lambda: Redis.from_url(redis_url()))


@dramatiq.actor(actor_name="bench_incr", queue_name=QUEUE)
def incr() -> None:
    _redis().incr(COUNTER)


@dramatiq.actor(actor_name="bench_late", queue_name=QUEUE)
def late(due: float) -> None:
    record_lateness_sync(_redis(), due)


def fill(n: int) -> None:
    for _ in range(n):
        incr.send()


def work(concurrency: int, target: int) -> None:
    worker = dramatiq.Worker(broker, worker_threads=concurrency)
    worker.start()
    threading.Event().wait()


def enqueue(n: int, batch: bool) -> float:
    incr.send()
    started = time.perf_counter()
    for _ in range(n):
        incr.send()
    return time.perf_counter() - started


def delayed(n: int, start: float) -> None:
    for due in due_times(n, start):
        late.send_with_options(args=(due,), delay=max(0, round((due - time.time()) * 1000)))


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=False, has_delay=True)

if __name__ == "__main__":
    main(ADAPTER)
