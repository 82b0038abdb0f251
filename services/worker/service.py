"""The worker: claims jobs with BLMOVE, runs their handlers, completes or fails them.

Per queue, one claim loop moves ids from ``ready`` into this worker's processing list
(BLMOVE while the queue is empty; inside the claim script, in batches, while it is
not) and leases them. Each job runs in its own task, at most ``concurrency`` at once.
A lease keeper extends the leases of long handlers; a heartbeat keeps the worker
alive in Redis so that, if it dies, the reaper recovers its jobs within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.worker.completer import Completer
from shared import failpoints, metrics, tracing
from shared import logging as plog
from shared.connection import UNAVAILABLE, connect
from shared.errors import Code, PermanentError, StaleLease
from shared.handlers import Registry, default_registry
from shared.jobs import Job
from shared.retry import Backoff
from shared.settings import Settings
from shared.store import ClaimResult, Store

BLOCK_S = 1.0  # BLMOVE timeout; must stay below the worker TTL (see docs/guarantees.md)
PAUSED_POLL_S = 1.0


@dataclass(slots=True)
class Running:
    job: Job
    task: asyncio.Task[None]
    started: float
    next_extend: float  # when the lease keeper extends the lease next
    deadline: float  # when the execution timeout cancels the handler
    cancel_reason: str = ""
    in_handler: bool = True  # False once the handler returned: finishing must not be cut


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """One worker process: ``start()``, ``run()`` until stopped, ``shutdown()``."""

    name = "worker"

    def __init__(
        self, settings: Settings, registry: Registry = default_registry,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.id = worker_id or settings.worker_id or new_worker_id()
        self.queues = settings.queue_list
        self.log = plog.get_logger("worker").bind(worker_id=self.id)
        self.redis = connect(settings, client_name=f"phx-worker-{self.id}")
        # No transparent retry for BLMOVE: when a reset loses the reply of a BLMOVE the
        # server ran, a silent retry would strand the moved id in our processing list;
        # the error must reach the claim loop, which then hands unclaimed ids back.
        self.blocking = connect(settings, blocking_s=BLOCK_S, retry=Retry(NoBackoff(), 0))
        self.store = Store(self.redis, settings)
        self.completer = Completer(self.store, self.id)
        self.running: dict[str, Running] = {}
        self.metrics = metrics.JobMetrics()
        self._reserved = 0
        self._finishing = 0  # jobs in self.running whose handler has returned
        self._slots = asyncio.Event()
        self._keeper_wake = asyncio.Event()
        self._keeper_due = 0.0
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._claimers: list[asyncio.Task[None]] = []
        self._blocked: set[str] = set()  # queues whose claim loop waits in BLMOVE
        self._last_heartbeat = 0.0

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.log.info("Worker starting", queues=self.queues,
                      concurrency=self.settings.concurrency, handlers=self.registry.types())
        backoff = Backoff(cap=5.0)
        while not self._stopping.is_set():  # be known as alive before taking any job
            try:
                await self._heartbeat_once()
                break
            except UNAVAILABLE as exc:
                self.log.warning("Redis unavailable, retrying", error=str(exc))
                await self._sleep(backoff.next())
        self._tasks = [asyncio.create_task(self._heartbeat_loop()),
                       asyncio.create_task(self._lease_keeper())]
        self._claimers = [asyncio.create_task(self._claim_loop(q)) for q in self.queues]

    def stop(self) -> None:
        if not self._stopping.is_set():
            self.log.info("Worker stopping: no more claims", running=len(self.running))
            self._stopping.set()
            self._slots.set()

    async def run(self) -> None:
        await self._stopping.wait()
        await self.drain()

    def healthy(self) -> bool:
        return time.monotonic() - self._last_heartbeat < self.settings.worker_ttl_ms / 1000

    async def drain(self) -> None:
        """Stop claiming; let running jobs finish within the grace; hand the rest back."""
        for queue, task in zip(self.queues, self._claimers, strict=True):
            if queue in self._blocked:  # never cut a claim call: its jobs would be leased
                task.cancel()           # with no task to run them until the lease expired
        await asyncio.gather(*self._claimers, return_exceptions=True)
        await self._return_unclaimed()
        tasks = [r.task for r in self.running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_ms / 1000)
        for run in list(self.running.values()):
            if run.in_handler:
                run.cancel_reason = "shutdown"
                run.task.cancel()
        leftovers = [r.task for r in self.running.values()]
        await asyncio.gather(*leftovers, return_exceptions=True)
        await self._return_unclaimed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._deregister()

    async def shutdown(self) -> None:
        await self.redis.aclose()
        await self.blocking.aclose()

    # -- claiming -----------------------------------------------------------------

    async def _claim_loop(self, queue: str) -> None:
        backoff = Backoff(cap=5.0)
        drained = True  # start by blocking: an idle worker makes no other calls
        moved: list[str] = []
        batch_min = max(1, self.settings.concurrency // 4)
        lost_reply = False
        while not self._stopping.is_set():
            if lost_reply:  # a BLMOVE whose reply was lost may have moved an id to our list
                if not await self._return_unclaimed_of(queue):
                    await self._sleep(backoff.next())
                    continue
                lost_reply, moved = False, []
            # blocking holds one slot only: a greedy reservation would starve other queues
            want = await self._reserve(1 if drained else batch_min, greedy=not drained)
            if want == 0:
                continue
            try:
                if drained and not moved:
                    job_id = await self._wait_ready(queue)
                    if job_id is None or self._stopping.is_set():
                        continue  # a late id stays in our list: drain hands it back
                    moved = [job_id]
                    failpoints.hit("worker.after_blmove")
                    want += self._reserve_free()  # claim a batch behind the moved id
                result = await self.store.claim(queue, self.id, moved, more=want - len(moved))
                moved = []
                backoff.reset()
            except UNAVAILABLE as exc:
                self.log.warning("Redis unavailable, claim retrying", queue=queue, error=str(exc))
                lost_reply = True
                await self._sleep(backoff.next())
                continue
            finally:
                self._release(want)
            drained = len(result.jobs) + len(result.skipped) < want
            self._start_jobs(result)
            if result.paused:
                await self._sleep(PAUSED_POLL_S)

    async def _wait_ready(self, queue: str) -> str | None:
        """BLMOVE, the one await of the claim loop that drain may cancel."""
        self._blocked.add(queue)
        try:
            return await self.store.wait_ready(queue, self.id, BLOCK_S, self.blocking)
        finally:
            self._blocked.discard(queue)

    async def _reserve(self, need: int, greedy: bool = True) -> int:
        """Wait until ``need`` slots are free; reserve them (greedy: all free slots)."""
        while not self._stopping.is_set():
            free = self._free()
            if free >= need:
                self._reserved += free if greedy else need
                return free if greedy else need
            self._slots.clear()
            await self._slots.wait()
        return 0

    def _free(self) -> int:
        """Slots free to claim into: handlers running, not jobs still being completed.

        A job whose handler returned frees its slot at once, so claiming overlaps with
        its completion round trip. At most ``concurrency`` more jobs may wait for their
        completion reply, which bounds what a slow Redis can pile up.
        """
        c = self.settings.concurrency
        busy = len(self.running)
        return min(c - (busy - self._finishing), 2 * c - busy) - self._reserved

    def _reserve_free(self) -> int:
        """Reserve every slot free right now, without waiting; returns how many."""
        free = max(0, self._free())
        self._reserved += free
        return free

    def _release(self, count: int) -> None:
        self._reserved -= count
        self._slots.set()

    def _start_jobs(self, result: ClaimResult) -> None:
        for job_id in result.skipped:
            self.log.info("Completed job without running: idempotency key already done",
                          job_id=job_id)
        now = time.monotonic()
        earliest = self._keeper_due
        for job in result.jobs:
            task = asyncio.create_task(self._run(job))
            run = Running(job, task, now, now + job.visibility_timeout_ms / 3000,
                          now + job.timeout_ms / 1000)
            self.running[job.id] = run
            earliest = min(earliest, run.next_extend, run.deadline)
            task.add_done_callback(lambda _t, jid=job.id: self._finished(jid))
        if earliest < self._keeper_due:
            self._keeper_wake.set()  # due before the keeper's next wake-up

    def _finished(self, job_id: str) -> None:
        run = self.running.pop(job_id, None)
        if run is not None and not run.in_handler:
            self._finishing -= 1
        self._slots.set()

    async def _return_unclaimed(self) -> None:
        """Hand back ids moved by BLMOVE but never claimed (no attempt is charged)."""
        for queue in self.queues:
            await self._return_unclaimed_of(queue)

    async def _return_unclaimed_of(self, queue: str) -> bool:
        """``_return_unclaimed`` for one queue; False when Redis was unreachable.

        Also run after a claim-loop error: a BLMOVE the server executed but whose reply
        never arrived (connection reset, timeout) left an id in our processing list that
        no task of ours runs and no lease covers — the reaper only recovers dead workers,
        so without this it would wait there as long as this worker lives.
        """
        try:
            for job_id in await self.store.processing_ids(queue, self.id):
                if job_id not in self.running:
                    code = await self.store.requeue(queue, job_id, self.id)
                    if code is Code.OK:
                        self.log.info("Handed back unclaimed job", job_id=job_id, queue=queue)
        except UNAVAILABLE as exc:
            self.log.warning("Redis unavailable: unclaimed ids not handed back yet",
                             queue=queue, error=str(exc))
            return False
        return True

    # -- running a job ------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        wait_ms = max(0, (job.started_at or 0) - job.available_at)
        log = self.log.bind(job_id=job.id, type=job.type, queue=job.queue, attempt=job.attempt,
                            request_id=job.request_id, trace_id=tracing.trace_id_of(job),
                            wait_ms=wait_ms)
        self.metrics.started(job)
        payload = {"payload": job.payload} if self.settings.log_payloads else {}
        if self.settings.log_job_start:
            log.info("Handling job", transition="processing", max_attempts=job.max_attempts,
                     **payload)
        elif payload:
            log = log.bind(**payload)  # the outcome line is the only one: it carries it
        handler = self.registry.get(job.type)
        if handler is None:
            await self._fail(job, log, f"no handler registered for job type {job.type!r}", True,
                             error_class="NoHandler")
            return
        started = time.monotonic()
        try:
            try:
                with tracing.job_span(job):
                    result = await handler(job)
            finally:
                self._left_handler(job.id)
        except asyncio.CancelledError:
            await self._cancelled(job, log, started)
            return
        except PermanentError as exc:
            await self._fail(job, log, _describe(exc), True, started, type(exc).__name__)
            return
        except Exception as exc:
            await self._fail(job, log, _describe(exc), False, started, type(exc).__name__)
            return
        failpoints.hit("worker.before_complete")
        await self._complete(job, log, result, started)

    def _left_handler(self, job_id: str) -> None:
        """The handler returned or raised: its slot is free, and the job is finishing
        (the keeper no longer enforces the execution timeout: finishing is never cut)."""
        run = self.running.get(job_id)
        if run is not None:
            run.in_handler = False
            self._finishing += 1
            self._slots.set()

    async def _complete(self, job: Job, log: Any, result: Any, started: float) -> None:
        run_ms = round((time.monotonic() - started) * 1000, 2)
        try:
            ok = await self._finish(job, log, self.completer.complete, job, result)
        except TypeError as exc:
            await self._fail(job, log, f"result is not JSON-serialisable: {exc}", True, started,
                             "TypeError")
            return
        if ok is not None:
            self.metrics.finished(job, "completed", run_ms)
            log.info("Completed job", transition="completed", run_ms=run_ms, outcome="completed")

    async def _fail(
        self, job: Job, log: Any, error: str, permanent: bool, started: float | None = None,
        error_class: str = "",
    ) -> None:
        run_ms = round((time.monotonic() - started) * 1000, 2) if started else 0
        res = await self._finish(job, log, self.store.fail, job, self.id, error, permanent)
        if res is None:
            return
        self.metrics.finished(job, res.state, run_ms)
        log = log.bind(error_class=error_class)
        if res.state == "dead":
            log.error("Job dead: moved to the DLQ", transition="dead", error=error,
                      run_ms=run_ms, permanent=permanent, outcome="dead")
        else:
            log.warning(f"Retrying job in {res.delay_ms}ms", transition="retrying",
                        delay_ms=res.delay_ms, error=error, run_ms=run_ms, outcome="retrying")

    async def _finish(self, job: Job, log: Any, call: Any, *args: Any) -> Any:
        """Run a finishing transition, retrying while Redis is unreachable (within the lease)."""
        backoff = Backoff()
        deadline = time.monotonic() + job.visibility_timeout_ms / 1000
        while True:
            try:
                return await call(*args)
            except StaleLease:
                self.metrics.stale(job)
                log.warning("Stale lease: result rejected, another attempt owns the job",
                            transition="stale", token=job.token)
                return None
            except UNAVAILABLE as exc:
                if time.monotonic() > deadline:
                    log.error("Redis unavailable past the lease; the job will be retried",
                              error=str(exc))
                    return None
                await asyncio.sleep(backoff.next())

    async def _cancelled(self, job: Job, log: Any, started: float) -> None:
        run = self.running.get(job.id)
        reason = run.cancel_reason if run else ""
        if reason == "lease lost":
            log.warning("Lease lost: handler cancelled", transition="stale")
            return
        if reason == "timeout":
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._fail(job, log, f"timed out after {job.timeout_ms} ms", False, started,
                             "TimeoutError")
            return
        try:
            code = await self.store.requeue(job.queue, job.id, self.id, job.token)
            log.info("Handed back job: no attempt charged", transition="queued",
                     handed_back=code is Code.OK)
        except UNAVAILABLE as exc:
            log.warning("Redis unavailable; the reaper will recover the job", error=str(exc))

    # -- background loops ---------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        for queue in self.queues:
            await self.store.heartbeat(queue, self.id)
        await self.store.set_worker_info(self.id, {
            "id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": self.queues, "concurrency": self.settings.concurrency,
            "running": [[r.job.queue, r.job.id] for r in self.running.values()],
        })
        self._last_heartbeat = time.monotonic()

    async def _heartbeat_loop(self) -> None:
        period = self.settings.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                await self._heartbeat_once()
            except UNAVAILABLE as exc:
                self.log.warning("Redis unavailable, heartbeat missed", error=str(exc))

    async def _lease_keeper(self) -> None:
        """Extend each running job's lease a third of the way through it, and cancel a
        handler that outlives its execution timeout (one timer for all jobs, not one each).
        """
        while True:
            nexts = [min(r.next_extend, r.deadline) if r.in_handler else r.next_extend
                     for r in self.running.values() if not r.cancel_reason]
            timeout = max(0.0, min(nexts) - time.monotonic()) if nexts else 1.0
            self._keeper_due = time.monotonic() + timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._keeper_wake.wait(), timeout)
            self._keeper_wake.clear()
            now = time.monotonic()
            for run in list(self.running.values()):
                if run.cancel_reason:
                    continue
                if run.in_handler and run.deadline <= now:
                    run.cancel_reason = "timeout"
                    run.task.cancel()
                elif run.next_extend <= now:
                    await self._extend(run, now)

    async def _extend(self, run: Running, now: float) -> None:
        job = run.job
        try:
            await self.store.extend_lease(job, job.visibility_timeout_ms)
            run.next_extend = now + job.visibility_timeout_ms / 3000
        except StaleLease:
            self.log.warning("Lease lost: extension rejected, another attempt owns the job",
                             job_id=job.id, queue=job.queue, token=job.token,
                             transition="stale")
            run.cancel_reason = "lease lost"
            if run.in_handler:
                run.task.cancel()
        except UNAVAILABLE as exc:
            self.log.warning("Redis unavailable, lease not extended", job_id=job.id,
                             error=str(exc))

    async def _deregister(self) -> None:
        try:
            for queue in self.queues:
                if not await self.store.processing_ids(queue, self.id):
                    await self.store.deregister_worker(queue, self.id)
            await self.store.delete_worker_info(self.id)
        except UNAVAILABLE as exc:
            self.log.warning("Redis unavailable at exit; the reaper will clean up",
                             error=str(exc))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
