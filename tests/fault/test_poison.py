"""F10: poison jobs mixed into good ones: handlers that raise, handlers that kill.

Attacks bounded retries (guarantee 5) and the DLQ: a job that always raises, and a job
whose handler kills its own worker process, must each reach ``dead`` after exactly
``maxAttempts`` deliveries — the killing kind through worker recovery, which charges
the attempt (by design: otherwise it would kill workers forever) — while every good job
completes and none lands in the DLQ.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from shared import keys
from shared.store import Store
from tests.fault import checker
from tests.fault.util import Supervisor, effect_specs, enqueue, start
from tests.harness.services import Topology

pytestmark = pytest.mark.fault

MAX_ATTEMPTS = 3


async def test_poison_jobs_die_after_max_attempts(fault_topology: Topology,
                                                  fault_store: Store, queue: str,
                                                  ledger_path, scale: int) -> None:
    good_n, raise_n, crash_n = 1000 * scale, 20 * scale, 6 * scale
    started = time.monotonic()
    topo = fault_topology
    reaper = await start(topo, "reaper")
    await start(topo, "scheduler")
    workers = Supervisor(topo, "worker", 2, PHOENIXQ_CONCURRENCY="8")
    await workers.start()
    poison = dict(max_attempts=MAX_ATTEMPTS, backoff_base_ms=50, backoff_cap_ms=200)
    specs = [
        *effect_specs(queue, good_n, prefix="good", payload={"seconds": 0.01},
                      max_attempts=10, backoff_base_ms=50, backoff_cap_ms=200),
        *effect_specs(queue, raise_n, "ledger.raise", prefix="raise", **poison),
        *effect_specs(queue, crash_n, "ledger.crash", prefix="crash", **poison),
    ]
    random.shuffle(specs)
    acked = await enqueue(fault_store, queue, specs)
    kind = {job_id: key.split("-")[0] for job_id, key in acked.items() if key}

    async def supervise() -> None:
        while True:
            await workers.step()
            await asyncio.sleep(0.1)

    supervisor = asyncio.create_task(supervise())
    try:
        await checker.settle(fault_store, queue, len(acked), timeout=240)
    finally:
        supervisor.cancel()
    report = await checker.check(fault_store, queue, acked, ledger_path, name="poison")
    data = report.ledger
    dlq = {i.decode() for i in await fault_store.redis.zrange(keys.dead(queue), 0, -1)}
    good = [i for i, k in kind.items() if k == "good"]
    charged = sum(report.jobs[i].attempt - 1 for i in good)  # type: ignore[union-attr]
    recovered = reaper.events("Recovered jobs of a dead worker")
    report.publish(
        good=good_n, raising=raise_n, crashing=crash_n, max_attempts=MAX_ATTEMPTS,
        dlq=len(dlq), good_in_dlq=sum(kind[i] == "good" for i in dlq),
        worker_deaths=workers.exits, recovered_workers=len(recovered),
        good_attempts_charged_by_crashes=charged,
        runtime_s=round(time.monotonic() - started, 1),
    )
    report.assert_ok()
    assert not workers.other_exits
    assert dlq == {i for i, k in kind.items() if k in ("raise", "crash")}
    for job_id, k in kind.items():
        job = report.jobs[job_id]
        assert job is not None
        runs = data.runs(job_id)
        if k == "good":
            assert job.state == "completed"
        elif k == "raise":
            assert job.state == "dead" and job.attempt == MAX_ATTEMPTS
            assert len(job.history) == MAX_ATTEMPTS
            # Each attempt ended by its own error, or by a crash job killing the worker.
            errors = [h["error"] for h in job.history]
            assert all("RuntimeError" in e or "died" in e for e in errors), errors
            raised = sum("RuntimeError" in e for e in errors)
            assert raised <= len(runs) <= MAX_ATTEMPTS
        else:  # crash: every delivery cost an attempt through worker recovery
            assert job.state == "dead" and job.attempt == MAX_ATTEMPTS
            assert len(job.history) == MAX_ATTEMPTS
            assert all("died" in h["error"] for h in job.history)
            # A crash job claimed in the same batch as another one may die unstarted.
            assert 1 <= len(runs) <= MAX_ATTEMPTS
    # Each worker death is one crash handler running; each was recovered by the reaper.
    crash_runs = sum(len(data.runs(i)) for i, k in kind.items() if k == "crash")
    assert workers.exits == crash_runs == len(recovered)
