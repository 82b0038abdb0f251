"""Handlers the benchmark's PhoenixQ workers load (``PHOENIXQ_HANDLERS``).

``bench.incr`` does the benchmark's one unit of work, an ``INCR`` on the counter, through
a Redis client it creates on first use. The client is configured like the peers'
(redis-py 5 defaults, no socket timeout): redis-py 8's default 5 s socket timeout wraps
every send in ``asyncio.wait_for``, a task per command, which would bill PhoenixQ for
the benchmark's own INCR. ``bench.late`` (delayed jobs) first records how
late it started: ``time.time()`` at start minus the job's ``availableAt``.
"""

from __future__ import annotations

import os
import time

from redis.asyncio import Redis

import phoenixq
from benchmarks.common import COUNTER, LATENESS

_client: Redis | None = None


def _redis() -> Redis:
    global _client
    if _client is None:
        url = os.environ.get("BENCH_REDIS_URL") or os.environ["REDIS_URL"]
        _client = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=None)
    return _client


@phoenixq.handler("bench.incr")
async def incr(job: phoenixq.Job) -> None:
    await _redis().incr(COUNTER)


@phoenixq.handler("bench.late")
async def late(job: phoenixq.Job) -> None:
    late_ms = time.time() * 1000 - job.available_at
    async with _redis().pipeline(transaction=False) as pipe:
        pipe.rpush(LATENESS, f"{late_ms:.3f}")
        pipe.incr(COUNTER)
        await pipe.execute()
