"""Every Prometheus metric PhoenixQ exports, defined once, and the glue that feeds them.

Each process registers the same definitions in prometheus-client's default registry and
exports only the ones it moves: the API counts enqueues, cancels and replays, serves
HTTP metrics and reads the queue gauges from Redis at scrape time; the worker counts
outcomes and observes run time, queue wait and lateness; the scheduler counts
promotions; the reaper counts lease expiries and recoveries; every process counts Redis
errors and reconnects. ``docs/operations.md`` lists them with the alerts to set.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import NoScriptError

from shared import keys
from shared import logging as plog
from shared.jobs import Job, JobSpec
from shared.store import EnqueueResult, QueueStats, Store

JOB = ("queue", "type")
#: Job run and wait times: 1 ms to 10 minutes.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                    30, 60, 120, 300, 600)
#: HTTP latency: 1 ms to 10 s.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

log = plog.get_logger("metrics")

# -- job lifecycle (labels: queue, type) ----------------------------------------------

JOBS_ENQUEUED = Counter("phoenixq_jobs_enqueued", "Jobs enqueued (duplicates excluded); API.",
                        JOB)
JOBS_COMPLETED = Counter("phoenixq_jobs_completed", "Attempts that completed; worker.", JOB)
JOBS_FAILED = Counter("phoenixq_jobs_failed",
                      "Attempts that failed (then retried or dead-lettered); worker.", JOB)
JOBS_RETRIED = Counter("phoenixq_jobs_retried", "Failed attempts scheduled for a retry; worker.",
                       JOB)
JOBS_DEAD = Counter("phoenixq_jobs_dead_lettered",
                    "Jobs the worker moved to the DLQ (the reaper's: phoenixq_jobs_recovered).",
                    JOB)
JOBS_REPLAYED = Counter("phoenixq_jobs_replayed", "Dead jobs replayed; API.", JOB)
JOBS_CANCELLED = Counter("phoenixq_jobs_cancelled", "Jobs cancelled; API.", JOB)
STALE_COMPLETIONS = Counter(
    "phoenixq_stale_completions",
    "complete/fail calls rejected because another attempt owns the job (fencing); worker.", JOB)
RUN_SECONDS = Histogram("phoenixq_job_run_duration_seconds",
                        "Handler run time of one attempt; worker.", JOB,
                        buckets=DURATION_BUCKETS)
WAIT_SECONDS = Histogram("phoenixq_job_queue_wait_seconds",
                         "Claim time minus the time the job became runnable; worker.", JOB,
                         buckets=DURATION_BUCKETS)
LATENESS_SECONDS = Histogram(
    "phoenixq_job_lateness_seconds",
    "Start minus due time of delayed and retried jobs; worker.", JOB, buckets=DURATION_BUCKETS)

# -- scheduler and reaper -------------------------------------------------------------

JOBS_PROMOTED = Counter("phoenixq_jobs_promoted", "Due jobs moved to ready; scheduler.",
                        ("queue",))
LEASES_EXPIRED = Counter("phoenixq_leases_expired",
                         "Leases that ran out (visibility timeout); reaper.", ("queue",))
JOBS_RECOVERED = Counter(
    "phoenixq_jobs_recovered",
    "Jobs taken back from dead workers, by outcome (retrying, dead, requeued); reaper.",
    ("queue", "outcome"))

# -- Redis and HTTP ---------------------------------------------------------------------

REDIS_ERRORS = Counter("phoenixq_redis_errors",
                       "Failed Redis connection attempts and commands, by exception class.",
                       ("error",))
REDIS_RECONNECTS = Counter("phoenixq_redis_reconnects",
                           "Connections re-established after being lost.")
HTTP_REQUESTS = Counter("phoenixq_http_requests", "HTTP requests, by route and status; API.",
                        ("method", "route", "status"))
HTTP_SECONDS = Histogram("phoenixq_http_request_duration_seconds",
                         "HTTP request latency, by route; API.", ("method", "route"),
                         buckets=HTTP_BUCKETS)
SSE_CLIENTS = Gauge("phoenixq_sse_clients", "Open /events streams; API.")


@functools.cache
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: the lookup costs more than an update."""
    return metric.labels(*labels)


# -- the worker's hot path --------------------------------------------------------------

@dataclass(slots=True)
class _JobChildren:
    completed: Any
    failed: Any
    retried: Any
    dead: Any
    stale: Any
    run: Any
    wait: Any
    lateness: Any


class JobMetrics:
    """The worker's per-job hook; label children are cached per (queue, type)."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str], _JobChildren] = {}

    def _of(self, job: Job) -> _JobChildren:
        key = (job.queue, job.type)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _JobChildren(*(
                child(metric, *key) for metric in (
                    JOBS_COMPLETED, JOBS_FAILED, JOBS_RETRIED, JOBS_DEAD, STALE_COMPLETIONS,
                    RUN_SECONDS, WAIT_SECONDS, LATENESS_SECONDS)))
        return children

    def started(self, job: Job) -> None:
        """Queue wait of every claim; lateness of jobs that were due later than created."""
        children = self._of(job)
        late_ms = max(0, (job.started_at or job.available_at) - job.available_at)
        children.wait.observe(late_ms / 1000)
        if job.available_at > job.created_at:
            children.lateness.observe(late_ms / 1000)

    def finished(self, job: Job, outcome: str, run_ms: float) -> None:
        """``outcome``: completed, retrying or dead."""
        children = self._of(job)
        children.run.observe(run_ms / 1000)
        if outcome == "completed":
            children.completed.inc()
            return
        children.failed.inc()
        (children.dead if outcome == "dead" else children.retried).inc()

    def stale(self, job: Job) -> None:
        self._of(job).stale.inc()


def record_recovery(queue: str, retrying: int, dead: int, requeued: int) -> None:
    for outcome, count in (("retrying", retrying), ("dead", dead), ("requeued", requeued)):
        if count:
            child(JOBS_RECOVERED, queue, outcome).inc(count)


# -- the API's counters: a store that counts what it did ----------------------------------

class InstrumentedStore(Store):
    """The API's ``Store``: counts enqueues, cancels and replays by queue and type.

    It also becomes the source of the queue gauges this process exports.
    """

    def __init__(self, client: Any, settings: Any) -> None:
        super().__init__(client, settings)
        QUEUE_STATS.source = self

    async def enqueue(self, queue: str, specs: Sequence[JobSpec],
                      now: int | None = None) -> list[EnqueueResult]:
        results = await super().enqueue(queue, specs, now)
        counts: dict[str, int] = {}
        for spec, res in zip(specs, results, strict=True):
            if not res.duplicate:
                counts[spec.type] = counts.get(spec.type, 0) + 1
        for job_type, count in counts.items():
            child(JOBS_ENQUEUED, queue, job_type).inc(count)
        return results

    async def cancel(self, queue: str, job_id: str, now: int | None = None) -> None:
        await super().cancel(queue, job_id, now)
        await self._count(JOBS_CANCELLED, queue, [job_id])

    async def replay_dead(self, queue: str, ids: Sequence[str] = (), limit: int = 100,
                          now: int | None = None) -> tuple[list[str], list[str]]:
        replayed, skipped = await super().replay_dead(queue, ids, limit, now)
        await self._count(JOBS_REPLAYED, queue, replayed)
        return replayed, skipped

    async def _count(self, counter: Counter, queue: str, ids: Sequence[str]) -> None:
        """Count by type: one pipelined HGET per id (operator actions are rare)."""
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.job(queue, job_id), "type")
            types = await pipe.execute()
        for job_type in types:
            child(counter, queue, job_type.decode() if job_type else "").inc()


# -- queue gauges, read from Redis at scrape time -----------------------------------------

class QueueStatsCollector(Collector):
    """Queue depth per state, oldest-ready age and pause flag of every queue.

    prometheus-client collects synchronously, the store is async: the /metrics view
    awaits ``refresh()`` (at most once a second, bounded by a timeout) and ``collect()``
    yields that snapshot. Without a source (every process but the API) it yields nothing.
    """

    MIN_INTERVAL_S = 1.0
    TIMEOUT_S = 1.5
    STATES = ("queued", "scheduled", "processing", "retrying", "dead", "completed")

    def __init__(self) -> None:
        self.source: Store | None = None
        self.snapshot: list[QueueStats] = []
        self._at = 0.0

    async def refresh(self) -> None:
        if self.source is None or time.monotonic() - self._at < self.MIN_INTERVAL_S:
            return
        self._at = time.monotonic()  # concurrent scrapes within the interval reuse this one
        try:
            async with asyncio.timeout(self.TIMEOUT_S):
                self.snapshot = await self._read(self.source)
        except Exception as exc:  # no stale numbers: an absent series is the signal
            self.snapshot = []
            log.warning("Queue gauges not refreshed", error=str(exc) or type(exc).__name__)

    @staticmethod
    async def _read(store: Store) -> list[QueueStats]:
        return await store.queues_stats(await store.queues())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("phoenixq_queue_jobs", "Jobs in a queue, by state; API.",
                                  labels=("queue", "state"))
        age = GaugeMetricFamily("phoenixq_queue_oldest_ready_age_seconds",
                                "Age of the oldest ready job (0 when none); API.",
                                labels=("queue",))
        paused = GaugeMetricFamily("phoenixq_queue_paused", "1 while a queue is paused; API.",
                                   labels=("queue",))
        for stats in self.snapshot:
            for state in self.STATES:
                depth.add_metric((stats.queue, state), getattr(stats, state))
            age.add_metric((stats.queue,), (stats.oldest_ready_age_ms or 0) / 1000)
            paused.add_metric((stats.queue,), float(stats.paused))
        yield from (depth, age, paused)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        snapshot, self.snapshot = self.snapshot, []
        try:
            yield from self.collect()
        finally:
            self.snapshot = snapshot


QUEUE_STATS = QueueStatsCollector()
REGISTRY.register(QUEUE_STATS)


# -- HTTP -----------------------------------------------------------------------------

async def metrics_view(_: web.Request) -> web.Response:
    """GET /metrics — the Prometheus text exposition of this process."""
    await QUEUE_STATS.refresh()
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def http_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by method, route template and status; time it."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = _route_of(request)
        child(HTTP_REQUESTS, request.method, route, str(status)).inc()
        child(HTTP_SECONDS, request.method, route).observe(time.perf_counter() - started)


def _route_of(request: web.Request) -> str:
    """The route template (``/jobs/{jobId}``), never the raw path: bounded cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


# -- Redis errors and reconnects ---------------------------------------------------------

def instrument_redis(client: Any) -> None:
    """Count errors and reconnects of ``client``'s connections (call before first use)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(pool.connection_class, "phx_counted", False):
        return
    pool.connection_class = _counting(pool.connection_class)


def instrument_clients(obj: object) -> None:
    """Instrument every redis client held in an attribute of ``obj`` (a service)."""
    for value in list(vars(obj).values()) if hasattr(obj, "__dict__") else []:
        if hasattr(value, "connection_pool"):
            instrument_redis(value)


def _count_error(exc: BaseException) -> None:
    """Count once, however many layers of the connection see the same exception."""
    if isinstance(exc, NoScriptError) or getattr(exc, "phx_counted", False):
        return  # NOSCRIPT is the expected first answer to EVALSHA
    REDIS_ERRORS.labels(type(exc).__name__).inc()
    try:
        exc.phx_counted = True  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _counting(base: type) -> type:
    class Counting(base):  # type: ignore[misc, valid-type]
        phx_counted = True
        phx_was_connected = False
        phx_handshake = False

        async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            fresh = not self.is_connected
            self.phx_handshake = True  # its optional commands may fail harmlessly
            try:
                await super().connect_check_health(*args, **kwargs)
            except Exception as exc:
                _count_error(exc)
                raise
            finally:
                self.phx_handshake = False
            if fresh:
                if self.phx_was_connected:
                    REDIS_RECONNECTS.inc()
                self.phx_was_connected = True

        async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().send_packed_command(*args, **kwargs)
            except Exception as exc:
                _count_error(exc)
                raise

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().read_response(*args, **kwargs)
            except Exception as exc:
                if not self.phx_handshake:
                    _count_error(exc)
                raise

    Counting.__name__ = Counting.__qualname__ = f"Counting{base.__name__}"
    return Counting
