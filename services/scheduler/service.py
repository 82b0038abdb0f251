"""The scheduler: promotes due jobs (delayed ones, retries after backoff) to ``ready``.

It sleeps until the earliest due time it knows of, and wakes early when a script
publishes on the wake channel that a job due sooner was scheduled. Each promotion is
one bounded, atomic script, so any number of schedulers may run at once.
"""

from __future__ import annotations

import asyncio
import time

from shared import failpoints, keys, metrics
from shared import logging as plog
from shared.connection import UNAVAILABLE, connect
from shared.retry import Backoff
from shared.settings import Settings
from shared.store import Store

#: Longest sleep without a wake-up: the net under a pub/sub message lost in a reconnect.
MAX_SLEEP_S = 5.0


class Scheduler:
    name = "scheduler"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = plog.get_logger("scheduler")
        self.redis = connect(settings, client_name="phx-scheduler")
        self.store = Store(self.redis, settings)
        self.next_due: dict[str, float] = {}  # queue -> local monotonic time it is due
        self._woken: set[str] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._last_pass = 0.0

    async def start(self) -> None:
        self.log.info("Scheduler starting")
        self._listener = asyncio.create_task(self._listen())

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def healthy(self) -> bool:
        return time.monotonic() - self._last_pass < MAX_SLEEP_S * 3

    async def run(self) -> None:
        backoff = Backoff(cap=5.0)
        full_pass = True
        while not self._stopping.is_set():
            try:
                await self.tick(full_pass)
                backoff.reset()
                full_pass = False
            except UNAVAILABLE as exc:
                self.log.warning("Redis unavailable, scheduler retrying", error=str(exc))
                await self._wait(backoff.next())
                full_pass = True
                continue
            timeout = self._sleep_for()
            if await self._wait(timeout) is False:
                full_pass = True  # slept the safety interval: look at every queue

    async def tick(self, full_pass: bool = True) -> int:
        """Promote what is due now; returns how many jobs moved."""
        now = time.monotonic()
        if full_pass:
            queues = set(await self.store.queues()) | set(self.next_due)
        else:
            queues = {q for q, due in self.next_due.items() if due <= now}
        queues |= self._woken
        self._woken.clear()
        moved = 0
        for queue in queues:
            moved += await self._promote(queue)
        self._last_pass = time.monotonic()
        return moved

    async def _promote(self, queue: str) -> int:
        moved = 0
        while True:
            failpoints.hit("scheduler.before_promote")
            res = await self.store.promote_due(queue)
            moved += res.promoted
            if res.promoted:
                metrics.JOBS_PROMOTED.labels(queue).inc(res.promoted)
                self.log.info("Promoted due jobs", queue=queue, count=res.promoted)
            if res.promoted < self.settings.promote_batch:
                break
        if res.next_due_ms is None:
            self.next_due.pop(queue, None)
        else:
            self.next_due[queue] = time.monotonic() + (res.next_due_ms - res.now_ms) / 1000
        return moved

    def _sleep_for(self) -> float:
        if not self.next_due:
            return MAX_SLEEP_S
        return max(0.0, min(MAX_SLEEP_S, min(self.next_due.values()) - time.monotonic()))

    async def _wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True when woken early (a message or stop)."""
        if timeout <= 0:
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._wake.clear()

    async def _listen(self) -> None:
        """Wake the loop when a job due sooner than the known head is scheduled."""
        backoff = Backoff(cap=5.0)
        while not self._stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.wake_channel())
                backoff.reset()
                self._wake.set()  # (re)subscribed: messages may have been missed
                while not self._stopping.is_set():
                    msg = await pubsub.get_message(timeout=MAX_SLEEP_S)
                    if msg is not None:
                        self._woken.add(msg["data"].decode())
                        self._wake.set()
            except UNAVAILABLE as exc:
                self.log.warning("Redis unavailable, wake-up channel lost", error=str(exc))
                await asyncio.sleep(backoff.next())
            finally:
                await pubsub.aclose()

    async def shutdown(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.redis.aclose()
