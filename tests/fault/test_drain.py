"""F4: SIGTERM drains a busy worker.

Attacks graceful shutdown (design 7): after the signal the worker claims nothing more,
running jobs that fit in the grace period finish, the ones that do not are handed back
to ``ready`` with no attempt charged, and the process exits 0.
"""

from __future__ import annotations

import signal
import time

import pytest

from shared import keys
from shared.store import Store
from tests.fault import checker
from tests.fault.util import effect_specs, enqueue, events_of, start, wait_for
from tests.harness.services import Topology

pytestmark = pytest.mark.fault

STOPPING = "Worker stopping: no more claims"


async def test_sigterm_drains_a_busy_worker(fault_topology: Topology, fault_store: Store,
                                            queue: str, ledger_path, scale: int) -> None:
    short_n, long_n, waiting_n = 4 * scale, 4 * scale, 40 * scale
    concurrency, grace_ms = short_n + long_n, 1000
    started = time.monotonic()
    topo = fault_topology
    worker = topo.start("worker", PHOENIXQ_CONCURRENCY=str(concurrency),
                        PHOENIXQ_SHUTDOWN_GRACE_MS=str(grace_ms))
    short = await enqueue(fault_store, queue, effect_specs(
        queue, short_n, "ledger.sleep", prefix="short", payload={"seconds": 0.3}))
    long = await enqueue(fault_store, queue, effect_specs(
        queue, long_n, "ledger.sleep", prefix="long", payload={"seconds": 3}))
    await wait_for(lambda: len(worker.events("Handling job")) >= concurrency, 30,
                   "every slot of the worker to be busy")
    waiting = await enqueue(fault_store, queue, effect_specs(queue, waiting_n, prefix="wait"))

    signalled = time.time()
    worker.signal(signal.SIGTERM)
    await wait_for(lambda: not worker.alive(), 30, "the worker to exit")
    exit_code = worker.proc.returncode  # type: ignore[union-attr]
    drain_s = time.time() - signalled

    lines = [line.get("event") for line in worker.lines]
    stop_at = lines.index(STOPPING)
    claims_after = lines[stop_at:].count("Handling job")
    data = (await checker.check(fault_store, queue, {}, ledger_path, name="drain")).ledger
    late_starts = [r for runs in data.executions.values() for r in runs
                   if r.started > signalled]
    jobs = await checker.fetch_jobs(fault_store, queue, [*short, *long, *waiting])
    handed_back = [e for e in await events_of(fault_store, queue)
                   if e["event"] == "queued" and e.get("from") == "handed_back"]
    ready = {i.decode() for i in await fault_store.redis.lrange(keys.ready(queue), 0, -1)}

    # The leftovers run later, on a fresh worker, as their first charged attempt.
    await start(topo, "worker", PHOENIXQ_CONCURRENCY="16")
    acked = {**short, **long, **waiting}
    await checker.settle(fault_store, queue, len(acked), timeout=60)
    report = await checker.check(fault_store, queue, acked, ledger_path, name="drain")
    report.publish(
        exit_code=exit_code, drain_s=round(drain_s, 2), grace_ms=grace_ms,
        claims_after_sigterm=claims_after + len(late_starts),
        finished_in_grace=sum(jobs[i].state == "completed" for i in short),  # type: ignore
        handed_back=len(handed_back), waiting_untouched=sum(
            jobs[i].state == "queued" and jobs[i].attempt == 0 for i in waiting),  # type: ignore
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert exit_code == 0
    assert claims_after == 0 and not late_starts
    for job_id in short:  # finished inside the grace period
        job = jobs[job_id]
        assert job is not None and job.state == "completed" and job.attempt == 1
    for job_id in long:  # cut off by the grace period: back in ready, attempt not charged
        job = jobs[job_id]
        assert job is not None and job.state == "queued" and job.attempt == 0, job
        assert job_id in ready
        assert [r.outcome for r in data.runs(job_id)] == ["cancelled"]
    assert {e["job"] for e in handed_back} >= set(long)
    for job_id in waiting:  # never claimed (or handed back unclaimed)
        job = jobs[job_id]
        assert job is not None and job.state == "queued" and job.attempt == 0
    report.assert_ok(dead_allowed=False)
    for job_id in long:
        job = report.jobs[job_id]
        assert job is not None and job.attempt == 1  # the cut-off run was not charged
