"""The reaper: enforces visibility timeouts, recovers dead workers, trims retention.

Every pass is a handful of atomic scripts per queue, so several reapers may run at
once: a job another reaper already handled is simply no longer there to handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from shared import failpoints, metrics
from shared import logging as plog
from shared.connection import UNAVAILABLE, connect
from shared.retry import Backoff
from shared.settings import Settings
from shared.store import Store

TRIM_EVERY_S = 10.0


class Reaper:
    name = "reaper"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = plog.get_logger("reaper")
        self.redis = connect(settings, client_name="phx-reaper")
        self.store = Store(self.redis, settings)
        self._stopping = asyncio.Event()
        self._last_trim = 0.0
        self._last_pass = 0.0

    async def start(self) -> None:
        self.log.info("Reaper starting", interval_ms=self.settings.reaper_interval_ms)

    def stop(self) -> None:
        self._stopping.set()

    def healthy(self) -> bool:
        return time.monotonic() - self._last_pass < 10 * self.settings.reaper_interval_ms / 1000

    async def run(self) -> None:
        backoff = Backoff(cap=5.0)
        interval = self.settings.reaper_interval_ms / 1000
        while not self._stopping.is_set():
            try:
                await self.tick()
                backoff.reset()
                delay = interval
            except UNAVAILABLE as exc:
                self.log.warning("Redis unavailable, reaper retrying", error=str(exc))
                delay = backoff.next()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def tick(self) -> None:
        """One pass over every known queue."""
        failpoints.hit("reaper.before_expire")
        trim = time.monotonic() - self._last_trim >= TRIM_EVERY_S
        now_ms = await self.store.redis_time_ms()
        for queue in await self.store.queues():
            await self._expire(queue)
            await self._recover(queue, now_ms)
            if trim:
                await self._trim(queue)
        if trim:
            self._last_trim = time.monotonic()
        self._last_pass = time.monotonic()

    async def _expire(self, queue: str) -> None:
        while True:
            ids = await self.store.expire_leases(queue)
            if ids:
                metrics.LEASES_EXPIRED.labels(queue).inc(len(ids))
            for job_id in ids:
                self.log.warning("Lease expired: visibility timeout", job_id=job_id,
                                 queue=queue, transition="lease_expired")
            if len(ids) < self.settings.reaper_batch:
                return

    async def _recover(self, queue: str, now_ms: int) -> None:
        for worker_id in await self.store.dead_workers(queue, now_ms):
            res = await self.store.recover_worker(queue, worker_id)
            if res.found and not res.alive:
                metrics.record_recovery(queue, res.retrying, res.dead, res.requeued)
                self.log.warning("Recovered jobs of a dead worker", queue=queue,
                                 dead_worker=worker_id, retrying=res.retrying, dead=res.dead,
                                 requeued=res.requeued, transition="worker_recovered")

    async def _trim(self, queue: str) -> None:
        done, dead = await self.store.trim_retention(queue)
        if done or dead:
            self.log.info("Trimmed retention", queue=queue, completed=done, dead=dead)

    async def shutdown(self) -> None:
        await self.redis.aclose()
