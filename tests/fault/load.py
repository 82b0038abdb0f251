"""Load for the Redis and network fault tests: HTTP and Store enqueuers, a progress probe.

The enqueuers behave like careful clients: every job carries its own idempotency key,
and a job whose enqueue failed (503, timeout, connection error) is re-sent with the same
key until Redis acknowledges it — so an ambiguous failure (the enqueue ran but its reply
was lost) ends as one acknowledged job, never as a stray one. A job counts as
acknowledged only when the API answered 202 (or 200 for the duplicate of a key an
earlier, ambiguous try had enqueued) or the Store call returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from shared import keys
from shared.connection import REDIS_ERRORS, connect
from shared.jobs import JobSpec
from shared.settings import Settings
from shared.store import Store
from tests.fault import checker
from tests.fault import ledger_handlers as ledger
from tests.fault.conftest import EVENTS_MAXLEN
from tests.harness.redis_server import RedisServer

API_BOUND_S = 2.5  # the API answers 503 within this when Redis is unreachable
LOAD_MARGIN_S = 1.0  # a loaded 2-core CI machine
SERVICE_ENV = {"PHOENIXQ_HEARTBEAT_MS": "300", "PHOENIXQ_WORKER_TTL_MS": "1500",
               "PHOENIXQ_REAPER_INTERVAL_MS": "200", "PHOENIXQ_CONCURRENCY": "8"}


@dataclass
class HttpLoad:
    """``posters`` concurrent clients POSTing ``ledger.effect`` jobs to ``api_url``."""

    api_url: str
    queue: str
    prefix: str
    posters: int = 3
    interval_s: float = 0.03
    job_type: str = "ledger.effect"
    payload: Any = None
    acked: dict[str, str | None] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    latency_by_status: dict[str, float] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    unavailable_at: list[tuple[float, float]] = field(default_factory=list)  # (start, secs)
    bad: list[tuple[int, str]] = field(default_factory=list)  # any 5xx but 503
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _n: int = 0

    def start(self) -> HttpLoad:
        self._tasks = [asyncio.create_task(self._poster()) for _ in range(self.posters)]
        return self

    async def stop(self) -> None:
        """Stop after every poster has its current job acknowledged."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def max_503_s(self) -> float:
        return max((s for _, s in self.unavailable_at), default=0.0)

    def first_ack_after(self, t: float) -> float | None:
        return next((a for a in sorted(self.ack_times) if a >= t), None)

    async def _poster(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not self._stop.is_set():
                self._n += 1
                key = f"{self.prefix}-{self._n}"
                body = {"type": self.job_type, "queue": self.queue, "idempotencyKey": key,
                        "payload": self.payload,
                        "maxAttempts": 25, "backoff": {"baseMs": 100, "capMs": 1000}}
                await self._until_acked(http, body, key)
                await asyncio.sleep(self.interval_s)

    async def _until_acked(self, http: aiohttp.ClientSession, body: dict[str, Any],
                           key: str) -> None:
        while True:
            started = time.monotonic()
            try:
                async with http.post(f"{self.api_url}/jobs", json=body) as resp:
                    status = resp.status
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, data = 0, {"error": type(exc).__name__}
            took = time.monotonic() - started
            label = str(status) if status else f"conn:{data['error']}"
            self.statuses[label] += 1
            self.latency_by_status[label] = max(self.latency_by_status.get(label, 0.0), took)
            if status in (200, 202):
                self.acked[data["jobId"]] = key
                self.ack_times.append(time.monotonic())
                return
            if status == 503:
                self.unavailable_at.append((started, took))
            elif status >= 500:
                self.bad.append((status, str(data)[:300]))
            await asyncio.sleep(random.uniform(0.05, 0.25))

    def figures(self) -> dict[str, Any]:
        return {"http_202_or_dup": len(self.acked),
                "http_503": self.statuses.get("503", 0),
                "http_500": sum(n for s, n in self.statuses.items() if s.startswith("5")
                                and s != "503"),
                "conn_errors": sum(n for s, n in self.statuses.items()
                                   if s.startswith("conn:")),
                "max_503_s": round(self.max_503_s, 3)}


@dataclass
class StoreLoad:
    """One client enqueueing one job per call through a ``Store``, retrying on errors.

    ``on_ack`` (if set) is called after each acknowledgement with the job id — the power
    loss test uses it to note the AOF size each acknowledged job lies under.
    """

    store: Store
    queue: str
    prefix: str
    job_type: str = "ledger.effect"
    delay_every: int = 0  # every n-th job is delayed (0: none)
    acked: dict[str, str | None] = field(default_factory=dict)
    ack_log: list[tuple[float, str, Any]] = field(default_factory=list)
    errors: int = 0
    on_ack: Any = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> StoreLoad:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"{self.prefix}-{n}"
            delay = 400 if self.delay_every and n % self.delay_every == 0 else 0
            spec = JobSpec(type=self.job_type, queue=self.queue, idempotency_key=key,
                           delay_ms=delay, max_attempts=25, backoff_base_ms=100,
                           backoff_cap_ms=1000).resolved(self.store.settings)
            while True:
                try:
                    (res,) = await self.store.enqueue(self.queue, [spec])
                except REDIS_ERRORS:
                    self.errors += 1
                    await asyncio.sleep(random.uniform(0.05, 0.2))
                    continue
                self.acked[res.job_id] = key
                extra = self.on_ack(res.job_id) if self.on_ack else None
                self.ack_log.append((time.monotonic(), res.job_id, extra))
                break
            await asyncio.sleep(0)


class Progress:
    """Samples the queue's completed count on its own connection (straight to Redis)."""

    def __init__(self, redis_url: str, queue: str, every_s: float = 0.05) -> None:
        self.client = Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.queue = queue
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Progress:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(*REDIS_ERRORS):
                count = await self.client.zcard(keys.completed(self.queue))
                self.samples.append((time.monotonic(), int(count)))
            await asyncio.sleep(self.every_s)

    def count_at(self, t: float) -> int:
        before = [c for s, c in self.samples if s <= t]
        return before[-1] if before else 0

    def first_growth_after(self, t: float) -> float | None:
        """When the completed count first grew past its value at ``t``."""
        base = self.count_at(t)
        return next((s for s, c in self.samples if s > t and c > base), None)

    async def wait_growth(self, by: int, timeout: float = 60.0) -> None:
        start = self.samples[-1][1] if self.samples else 0
        deadline = time.monotonic() + timeout
        while not self.samples or self.samples[-1][1] < start + by:
            if time.monotonic() > deadline:
                raise TimeoutError(f"completed count did not grow by {by} in {timeout}s")
            await asyncio.sleep(self.every_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()


def service_env(redis_url: str, queue: str, ledger_path: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "PHOENIXQ_QUEUES": queue,
            "PHOENIXQ_HANDLERS": "tests.fault.ledger_handlers", ledger.ENV: str(ledger_path),
            "PHOENIXQ_EVENTS_MAXLEN": str(EVENTS_MAXLEN), **SERVICE_ENV}


async def settle_and_check(store: Store, queue: str, acked: dict[str, str | None],
                           ledger_path: Path, name: str,
                           timeout: float = 90) -> checker.Report:
    """Wait for every acknowledged job to finish; on a timeout, fail with the checker's
    account of what is missing and where it is stuck (not a bare timeout)."""
    try:
        await checker.settle(store, queue, len(acked), timeout=timeout)
    except TimeoutError:
        report = await checker.check(store, queue, acked, ledger_path, name=name)
        stranded = {}
        async for key in store.redis.scan_iter(match=keys.processing_prefix(queue) + "*"):
            for raw in await store.redis.lrange(key, 0, -1):
                job = await store.get_job(raw.decode(), queue)
                stranded[raw.decode()] = (key.decode().rsplit(":", 1)[-1], job.state)
        report.publish(stranded_in_processing=len(stranded))
        report.assert_ok(dead_allowed=False)
        raise AssertionError(f"{name}: not settled; in processing lists: {stranded}") from None
    return await checker.check(store, queue, acked, ledger_path, name=name)


class Stores:
    """Stores straight to a redis-server (not through any proxy), closed together."""

    def __init__(self) -> None:
        self.clients: list[Any] = []

    def make(self, server: RedisServer, queue: str) -> Store:
        settings = Settings.from_env({}, redis_url=server.url, queues=queue,
                                     events_maxlen=EVENTS_MAXLEN, redis_timeout_ms=1000,
                                     durable_enqueue_timeout_ms=500)
        client = connect(settings)
        self.clients.append(client)
        return Store(client, settings)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def now(value: Any) -> Any:
    """``async_wait_until`` wants a coroutine: wrap a plain condition."""
    return value
