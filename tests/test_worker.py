"""The worker, scheduler and reaper objects in process, against the real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import structlog

import phoenixq
from services.reaper.service import Reaper
from services.scheduler.service import Scheduler
from services.worker.service import Worker
from shared import keys
from shared.handlers import Registry
from shared.jobs import JobSpec
from shared.settings import Settings
from shared.store import Store
from tests.harness.wait import async_wait_until


@contextlib.asynccontextmanager
async def running(*services: object) -> AsyncIterator[None]:
    tasks = []
    for svc in services:
        await svc.start()  # type: ignore[attr-defined]
        tasks.append(asyncio.create_task(svc.run()))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for svc in services:
            svc.stop()  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)
        for svc in services:
            await svc.shutdown()  # type: ignore[attr-defined]


async def enqueue(store: Store, queue: str, job_type: str, payload: object = None,
                  **kw: object) -> str:
    spec = JobSpec(type=job_type, payload=payload, queue=queue, **kw).resolved(store.settings)  # type: ignore[arg-type]
    (res,) = await store.enqueue(queue, [spec])
    return res.job_id


async def wait_state(store: Store, queue: str, job_id: str, *states: str,
                     timeout: float = 10) -> phoenixq.Job:
    async def check() -> phoenixq.Job | None:
        job = await store.get_job(job_id, queue)
        return job if job.state in states else None

    return await async_wait_until(check, timeout, what=f"job {job_id} in {states}")


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    calls: list[tuple[str, int]] = []
    reg.calls = calls  # type: ignore[attr-defined]

    @reg.handler("ok")
    async def ok(job: phoenixq.Job) -> dict:
        calls.append((job.id, job.attempt))
        return {"echo": job.payload, "key": job.idempotency_key}

    @reg.handler("flaky")
    async def flaky(job: phoenixq.Job) -> str:
        calls.append((job.id, job.attempt))
        if job.attempt < 3:
            raise RuntimeError(f"attempt {job.attempt} fails")
        return "third time lucky"

    @reg.handler("always")
    async def always(job: phoenixq.Job) -> None:
        calls.append((job.id, job.attempt))
        raise ValueError("never works")

    @reg.handler("permanent")
    async def permanent(job: phoenixq.Job) -> None:
        raise phoenixq.PermanentError("bad payload")

    @reg.handler("slow")
    async def slow(job: phoenixq.Job) -> str:
        calls.append((job.id, job.attempt))
        await asyncio.sleep(job.payload["seconds"])
        return "slept"

    @reg.handler("unserialisable")
    async def unserialisable(job: phoenixq.Job) -> object:
        return object()

    return reg


async def test_completes_and_stores_result(settings, store, queue, registry):
    worker = Worker(settings, registry)
    async with running(worker):
        job_id = await enqueue(store, queue, "ok", {"a": 1}, idempotency_key="k-1")
        job = await wait_state(store, queue, job_id, "completed")
    assert job.result == {"echo": {"a": 1}, "key": "k-1"}
    assert job.attempt == 1 and registry.calls == [(job_id, 1)]
    assert await store.redis.get(keys.done(queue, "k-1")) == job_id.encode()
    assert await store.processing_ids(queue, worker.id) == []


async def test_retries_with_backoff_then_succeeds(settings, store, queue, registry):
    async with running(Worker(settings, registry), Scheduler(settings)):
        job_id = await enqueue(store, queue, "flaky")
        job = await wait_state(store, queue, job_id, "completed")
    assert job.result == "third time lucky" and job.attempt == 3
    assert [h["attempt"] for h in job.history] == [1, 2]
    gaps = [job.history[1]["finishedAt"] - job.history[0]["finishedAt"]]
    assert gaps[0] >= settings.backoff_base_ms  # the retry waited out its backoff


async def test_exhausted_attempts_go_to_dlq(settings, store, queue, registry):
    async with running(Worker(settings, registry), Scheduler(settings)):
        job_id = await enqueue(store, queue, "always", max_attempts=3)
        job = await wait_state(store, queue, job_id, "dead")
    assert job.attempt == 3 and len(job.history) == 3
    assert job.last_error == "ValueError: never works"
    assert [c[1] for c in registry.calls] == [1, 2, 3]  # never more than maxAttempts
    assert job_id.encode() in await store.redis.zrange(keys.dead(queue), 0, -1)


@pytest.mark.parametrize(("job_type", "error"), [
    ("permanent", "PermanentError: bad payload"),
    ("missing.type", "no handler registered for job type 'missing.type'"),
    ("unserialisable", "result is not JSON-serialisable"),
])
async def test_dead_at_once(settings, store, queue, registry, job_type, error):
    async with running(Worker(settings, registry)):
        job_id = await enqueue(store, queue, job_type, max_attempts=5)
        job = await wait_state(store, queue, job_id, "dead")
    assert job.attempt == 1 and job.last_error.startswith(error)


async def test_execution_timeout_fails_the_attempt(settings, store, queue, registry):
    async with running(Worker(settings, registry)):
        job_id = await enqueue(store, queue, "slow", {"seconds": 5}, timeout_ms=200,
                               max_attempts=1)
        job = await wait_state(store, queue, job_id, "dead")
    assert job.last_error == "timed out after 200 ms"


async def test_lease_is_extended_while_handler_runs(settings, store, queue, registry):
    """A handler running 4x its visibility timeout is never re-delivered."""
    async with running(Worker(settings, registry), Reaper(settings)):
        job_id = await enqueue(store, queue, "slow", {"seconds": 2.0},
                               visibility_timeout_ms=500)
        job = await wait_state(store, queue, job_id, "completed")
    assert job.attempt == 1 and len(registry.calls) == 1


async def test_idempotent_key_already_done_skips_handler(settings, store, queue, registry):
    async with running(Worker(settings, registry)):
        first = await enqueue(store, queue, "ok", idempotency_key="charge-9")
        await wait_state(store, queue, first, "completed")
        await store.redis.delete(keys.idem(queue, "charge-9"))  # dedup window over
        second = await enqueue(store, queue, "ok", idempotency_key="charge-9")
        job = await wait_state(store, queue, second, "completed")
    assert job.result == {"skipped": "idempotency key already done"}
    assert [c[0] for c in registry.calls] == [first]


async def test_concurrency_is_bounded(settings, store, queue, registry):
    settings = Settings.from_env({}, **{**_fields(settings), "concurrency": 3})
    worker = Worker(settings, registry)
    peak = peak_tracked = 0
    async with running(worker):
        ids = [await enqueue(store, queue, "slow", {"seconds": 0.2}) for _ in range(9)]
        for job_id in ids:
            while (await store.get_job(job_id, queue)).state != "completed":
                handlers = sum(run.in_handler for run in worker.running.values())
                peak = max(peak, handlers)
                peak_tracked = max(peak_tracked, len(worker.running))
                await asyncio.sleep(0.01)
    assert 1 <= peak <= 3  # handlers running at once
    assert peak_tracked <= 6  # plus at most as many awaiting their completion reply


async def test_sigterm_drain_hands_back_without_charging(settings, store, queue, registry):
    settings = Settings.from_env({}, **{**_fields(settings), "shutdown_grace_ms": 300,
                                        "concurrency": 2})
    worker = Worker(settings, registry)
    async with running(worker):
        quick = await enqueue(store, queue, "slow", {"seconds": 0.1})
        stuck = await enqueue(store, queue, "slow", {"seconds": 30})
        await wait_state(store, queue, stuck, "processing")
        worker.stop()
        waiting = await enqueue(store, queue, "ok")  # arrives after the signal
    assert (await store.get_job(quick, queue)).state == "completed"
    handed = await store.get_job(stuck, queue)
    assert (handed.state, handed.attempt) == ("queued", 0)
    assert (await store.get_job(waiting, queue)).state == "queued"  # never claimed
    assert await store.redis.zscore(keys.workers(queue), worker.id) is None


async def test_paused_queue_is_not_claimed(settings, store, queue, registry):
    await store.pause(queue)
    async with running(Worker(settings, registry)):
        job_id = await enqueue(store, queue, "ok")
        await asyncio.sleep(0.3)  # give a worker the chance it must not take
        assert (await store.get_job(job_id, queue)).state == "queued"
        await store.resume(queue)
        await wait_state(store, queue, job_id, "completed")


async def test_scheduler_wakes_early_for_sooner_job(settings, store, queue, registry):
    async with running(Worker(settings, registry), Scheduler(settings)):
        await enqueue(store, queue, "ok", delay_ms=60_000)
        await asyncio.sleep(0.2)  # the scheduler now sleeps towards the far job
        soon = await enqueue(store, queue, "ok", delay_ms=300)
        job = await wait_state(store, queue, soon, "completed", timeout=5)
    assert job.started_at - job.available_at < 250  # woken by the publish, not a poll


async def test_reaper_recovers_dead_worker_jobs(settings, store, queue, registry):
    job_id = await enqueue(store, queue, "ok")
    (job,) = (await store.claim(queue, "ghost", more=1)).jobs  # a worker that then died
    await store.heartbeat(queue, "ghost")
    async with running(Reaper(settings), Scheduler(settings), Worker(settings, registry)):
        done = await wait_state(store, queue, job_id, "completed",
                                timeout=settings.worker_ttl_ms / 1000 + 5)
    assert done.attempt == 2 and "worker ghost died" in done.history[0]["error"]
    assert job.token == "1" and done.token == "2"


def _fields(settings: Settings) -> dict:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


@pytest.mark.parametrize("log_start", [True, False])
async def test_log_lines_per_job(settings, store, queue, registry, log_start):
    """`PHOENIXQ_LOG_JOB_START=false` leaves one canonical line per job, its outcome."""
    settings = Settings.from_env({}, **{**_fields(settings), "log_job_start": log_start,
                                        "log_payloads": True})
    with structlog.testing.capture_logs() as logs:
        worker = Worker(settings, registry)
        async with running(worker):
            job_id = await enqueue(store, queue, "ok", {"n": 7})
            await wait_state(store, queue, job_id, "completed")
    story = [e for e in logs if e.get("job_id") == job_id]
    assert [e["event"] for e in story] == (["Handling job"] if log_start else []) + [
        "Completed job"]
    outcome = story[-1]
    assert (outcome["transition"], outcome["type"], outcome["attempt"]) == ("completed", "ok", 1)
    assert "run_ms" in outcome and "wait_ms" in outcome
    assert story[0]["payload"] == {"n": 7}  # the first line of the job carries the payload
