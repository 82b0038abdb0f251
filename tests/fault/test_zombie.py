"""F3: a zombie worker (SIGSTOPped past its leases) and a slow-but-alive handler.

Attacks fencing (guarantee 3) and guarded effects (4c): a worker frozen while holding
jobs loses their leases; the jobs run again elsewhere; when the zombie thaws, its late
effects must be ignored by the key guard and its late completions refused by the token
— every time. And the converse: a live worker's lease keeper must keep a handler that
runs 10x the visibility timeout from being delivered twice.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from shared.store import Store
from tests.fault import checker
from tests.fault import ledger_handlers as ledger
from tests.fault.util import (
    effect_specs,
    enqueue,
    is_stopped,
    start,
    wait_for,
    worker_id,
)
from tests.harness.services import Topology

pytestmark = pytest.mark.fault

STALE = "Stale lease: result rejected, another attempt owns the job"


async def test_zombie_late_completions_are_rejected(fault_topology: Topology,
                                                    fault_store: Store, queue: str,
                                                    ledger_path, scale: int) -> None:
    trials = 120 * scale
    vt_ms = 1000
    started = time.monotonic()
    topo = fault_topology
    reaper = topo.start("reaper")
    topo.start("scheduler")
    # A long liveness TTL: the zombie stays "alive", so only its leases can expire.
    zombie = topo.start("worker", PHOENIXQ_WORKER_TTL_MS="120000",
                        PHOENIXQ_CONCURRENCY=str(trials + 8))
    acked = await enqueue(fault_store, queue, effect_specs(
        queue, trials, "ledger.freeze", payload={"group": trials}, visibility_timeout_ms=vt_ms,
        max_attempts=5, backoff_base_ms=50, backoff_cap_ms=200))
    # The last of the zombie's handlers SIGSTOPs its process: every job is held, every
    # handler is past its start, no lease will be extended.
    await wait_for(lambda: is_stopped(zombie.pid), 60, what="the zombie to freeze")
    stopped_at = time.monotonic()
    rescuer = await start(topo, "worker", PHOENIXQ_CONCURRENCY="64")
    await checker.settle(fault_store, queue, trials, timeout=120,
                         what="the jobs to be re-run by the rescuer")
    before = await checker.fetch_jobs(fault_store, queue, acked)
    frozen_s = time.monotonic() - stopped_at

    os.kill(zombie.pid, signal.SIGCONT)
    await wait_for(lambda: _count(zombie, STALE) >= trials, 60,
                   what=f"{trials} stale-lease rejections in the zombie's log")
    after = await checker.fetch_jobs(fault_store, queue, acked)
    report = await checker.check(fault_store, queue, acked, ledger_path, name="zombie")
    data = report.ledger
    zombie_pid, rescuer_id = zombie.pid, worker_id(rescuer)
    zombie_runs = [r for runs in data.executions.values() for r in runs if r.pid == zombie_pid]
    expired = reaper.events("Lease expired: visibility timeout")
    report.publish(
        trials=trials, stale_rejected=_count(zombie, STALE), lease_expired=len(expired),
        zombie_executions=len(zombie_runs),
        zombie_effects_ignored=sum(r.outcome == "ignored" for r in zombie_runs),
        vt_ms=vt_ms, frozen_s=round(frozen_s, 1), runtime_s=round(time.monotonic() - started, 1),
    )
    report.assert_ok(dead_allowed=False)
    assert _count(zombie, STALE) == trials
    stale_ids = {line["job_id"] for line in zombie.events(STALE)}
    assert stale_ids == set(acked)  # one rejection per job
    for job_id in acked:
        b, a = before[job_id], after[job_id]
        assert b is not None and a is not None
        assert a.state == "completed" and a.attempt == 2 and a.worker == rescuer_id
        assert (a.finished_at, a.token, a.result) == (b.finished_at, b.token, b.result)
        runs = data.runs(job_id)
        assert [r.pid for r in runs].count(zombie_pid) == 1 and len(runs) == 2
        assert data.applied[ledger.effect_key(a)] == 1  # the zombie's late effect: ignored
    assert all(r.outcome == "ignored" for r in zombie_runs)
    assert zombie.alive()  # a zombie, not a corpse: it just lost every argument


async def test_lease_extension_keeps_a_slow_handler_single(fault_topology: Topology,
                                                           fault_store: Store, queue: str,
                                                           ledger_path, scale: int) -> None:
    jobs, vt_ms = 20 * scale, 500
    started = time.monotonic()
    reaper = fault_topology.start("reaper")
    fault_topology.start("scheduler")
    fault_topology.start("worker", PHOENIXQ_CONCURRENCY=str(jobs))
    fault_topology.start("worker", PHOENIXQ_CONCURRENCY=str(jobs))
    acked = await enqueue(fault_store, queue, effect_specs(
        queue, jobs, "ledger.sleep", payload={"seconds": 10 * vt_ms / 1000},
        visibility_timeout_ms=vt_ms, max_attempts=5))
    await checker.settle(fault_store, queue, jobs, timeout=120)
    report = await checker.check(fault_store, queue, acked, ledger_path, name="slow-handler")
    expired = reaper.events("Lease expired: visibility timeout")
    report.publish(jobs=jobs, vt_ms=vt_ms, handler_ms=10 * vt_ms, lease_expired=len(expired),
                   runtime_s=round(time.monotonic() - started, 1))
    report.assert_ok(dead_allowed=False)
    assert report.dup_deliveries == 0 and not expired
    assert all(j is not None and j.attempt == 1 for j in report.jobs.values())


def _count(proc, event: str) -> int:  # type: ignore[no-untyped-def]
    return len(proc.events(event))

