"""What every adapter shares: the Redis URL, the counter, the CLI and the exit watcher.

An adapter (``benchmarks/peers/<system>_bench.py``) runs under its system's interpreter
and is driven by ``benchmarks/bench.py`` through one small CLI::

    fill N                         enqueue N no-op jobs (fastest way the system offers)
    work --concurrency C --target T  run one worker process until the counter reaches T
    enqueue N [--batch]            time N enqueues from one client; prints seconds
    delayed N --start S            enqueue N jobs due between S and S + 2 s (epoch seconds)

Every job does one ``INCR`` on ``COUNTER``; a delayed job first pushes its lateness
(``time.time()`` at start minus its due time, in ms) onto ``LATENESS``. Results go to
stdout as one JSON line.

This module uses only the standard library and redis-py, which both interpreters have.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

COUNTER = "bench:count"
LATENESS = "bench:lateness"
QUEUE = "bench"
SPREAD_S = 2.0
BATCH = 100  # jobs per call of a batch enqueue API


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def due_times(n: int, start: float) -> list[float]:
    """``n`` due times (epoch seconds) spread evenly over ``SPREAD_S`` from ``start``."""
    return [start + SPREAD_S * i / n for i in range(n)]


def watch_counter(target: int, on_done: Callable[[], None] | None = None,
                  period: float = 0.05) -> threading.Thread:
    """A daemon thread that ends the process once ``COUNTER`` reaches ``target``."""
    import redis

    def run() -> None:
        client = redis.Redis.from_url(redis_url())
        while True:
            value = client.get(COUNTER)
            if value is not None and int(value) >= target:
                break
            time.sleep(period)
        if on_done is not None:
            on_done()
        sys.stdout.flush()
        os._exit(0)

    thread = threading.Thread(target=run, name="bench-watcher", daemon=True)
    thread.start()
    return thread


@dataclass
class Adapter:
    """One system's operations; each may be sync or async."""

    fill: Callable[[int], Any]
    work: Callable[[int, int], Any]
    enqueue: Callable[[int, bool], Any]  # returns elapsed seconds
    delayed: Callable[[int, float], Any]
    concurrency: int
    has_batch: bool
    has_delay: bool


def _call(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def main(adapter: Adapter, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info")
    p = sub.add_parser("fill")
    p.add_argument("n", type=int)
    p = sub.add_parser("work")
    p.add_argument("--concurrency", type=int, default=adapter.concurrency)
    p.add_argument("--target", type=int, required=True)
    p = sub.add_parser("enqueue")
    p.add_argument("n", type=int)
    p.add_argument("--batch", action="store_true")
    p = sub.add_parser("delayed")
    p.add_argument("n", type=int)
    p.add_argument("--start", type=float, required=True)
    args = parser.parse_args(argv)

    if args.cmd == "info":
        out: dict[str, Any] = {"concurrency": adapter.concurrency, "batch": adapter.has_batch,
                               "delay": adapter.has_delay}
    elif args.cmd == "fill":
        started = time.perf_counter()
        _call(adapter.fill, args.n)
        out = {"seconds": time.perf_counter() - started}
    elif args.cmd == "work":
        watch_counter(args.target)
        _call(adapter.work, args.concurrency, args.target)
        out = {}
    elif args.cmd == "enqueue":
        if args.batch and not adapter.has_batch:
            out = {"error": "no batch enqueue API"}
        else:
            out = {"seconds": _call(adapter.enqueue, args.n, args.batch)}
    else:
        started = time.perf_counter()
        _call(adapter.delayed, args.n, args.start)
        out = {"seconds": time.perf_counter() - started}
    print(json.dumps(out), flush=True)


def record_lateness_sync(client: Any, due: float) -> None:
    """For a delayed job: lateness (ms) first, then the counter, in one round trip."""
    late_ms = (time.time() - due) * 1000
    pipe = client.pipeline(transaction=False)
    pipe.rpush(LATENESS, f"{late_ms:.3f}")
    pipe.incr(COUNTER)
    pipe.execute()


async def record_lateness_async(client: Any, due: float) -> None:
    late_ms = (time.time() - due) * 1000
    async with client.pipeline(transaction=False) as pipe:
        pipe.rpush(LATENESS, f"{late_ms:.3f}")
        pipe.incr(COUNTER)
        await pipe.execute()
