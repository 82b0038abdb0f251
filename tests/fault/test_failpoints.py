"""F2: every failpoint hit again and again, with a supervisor restarting what died.

Attacks the windows between two Redis round trips that a random SIGKILL rarely hits:
an id moved by BLMOVE but not yet claimed, a handler done but its completion not yet
sent, due jobs found but not yet promoted, a reaper pass begun but not finished (or
frozen for good). Each run trickles jobs in while the process under test keeps dying;
then the faulty processes are killed one last time, clean ones take over, and the
history must show 0 lost, 0 duplicate guarded effects, 0 stuck in processing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest

from shared.jobs import JobSpec
from shared.store import Store
from tests.fault import checker
from tests.fault.util import Supervisor, enqueue, start
from tests.harness.services import Topology

pytestmark = pytest.mark.fault

HITS = 50


@dataclass(frozen=True)
class Case:
    name: str
    role: str           # the service running with the failpoint
    failpoint: str      # PHOENIXQ_FAILPOINTS value for it
    count: int          # how many of it run at once
    delayed: bool = False       # enqueue delayed jobs (the scheduler has work)
    worker_fault: str = ""      # failpoint for the (otherwise clean) workers
    extra: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("worker-after-blmove", "worker", "worker.after_blmove=exit:0.2", 3),
    Case("worker-before-complete", "worker", "worker.before_complete=exit:0.05", 3),
    Case("scheduler-before-promote", "scheduler", "scheduler.before_promote=exit:0.3", 2,
         delayed=True),
    # The reaper has work only when workers die: those die at before_complete too.
    Case("reaper-before-expire-exit", "reaper", "reaper.before_expire=exit:0.5", 3,
         worker_fault="worker.before_complete=exit:0.01"),
    Case("reaper-before-expire-hang", "reaper", "reaper.before_expire=hang:0.5", 3,
         worker_fault="worker.before_complete=exit:0.01"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_failpoint_hit_repeatedly(case: Case, fault_topology: Topology,
                                        fault_store: Store, queue: str, ledger_path,
                                        scale: int) -> None:
    hits_wanted = HITS * scale
    started = time.monotonic()
    topo = fault_topology
    topo.env.update({"PHOENIXQ_CONCURRENCY": "8", "PHOENIXQ_BACKOFF_BASE_MS": "50"})
    roles = {"worker": 3, "scheduler": 1, "reaper": 1}
    sups: dict[str, Supervisor] = {}
    for role, count in roles.items():
        env: dict[str, str] = {}
        if role == case.role:
            count, env = case.count, {"PHOENIXQ_FAILPOINTS": case.failpoint}
        elif role == "worker" and case.worker_fault:
            env = {"PHOENIXQ_FAILPOINTS": case.worker_fault}
        sups[role] = Supervisor(topo, role, count, detect_hangs=role == case.role, **env)
    await asyncio.gather(*(s.start() for s in sups.values()))
    under_test = sups[case.role]

    acked: dict[str, str | None] = {}
    serial = itertools.count()
    deadline = time.monotonic() + 240
    while under_test.hits < hits_wanted:
        assert time.monotonic() < deadline, f"only {under_test.hits} hits in 240 s"
        specs = [JobSpec(type="ledger.effect", queue=queue, payload={"seconds": 0.02},
                         idempotency_key=f"k-{next(serial)}", max_attempts=100,
                         backoff_base_ms=50, backoff_cap_ms=500,
                         delay_ms=(200 + n * 100) if case.delayed else 0)
                 for n in range(10)]
        acked.update(await enqueue(fault_store, queue, specs))
        for sup in sups.values():
            await sup.step()
        await asyncio.sleep(0.1)  # the trickle's pace: ~100 jobs/s

    # The last fault: every faulty process dies at once. Clean processes take over.
    hits = {role: (s.exits, s.hangs) for role, s in sups.items()}
    other_exits = [code for s in sups.values() for code in s.other_exits]
    for sup in sups.values():
        sup.kill_all()
    reaper = await start(topo, "reaper")
    await asyncio.gather(start(topo, "scheduler"), start(topo, "worker"),
                         start(topo, "worker"))
    await checker.settle(fault_store, queue, len(acked), timeout=180)
    report = await checker.check(fault_store, queue, acked, ledger_path, name=f"fp-{case.name}")
    recovered = [line for proc in [*sups["reaper"].started, reaper]
                 for line in proc.events("Recovered jobs of a dead worker")]
    report.publish(
        failpoint=case.failpoint, hits=under_test.hits, exits=under_test.exits,
        hangs=under_test.hangs, worker_deaths=hits["worker"][0],
        recovered_workers=len(recovered),
        requeued_uncharged=sum(int(r.get("requeued", 0)) for r in recovered),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert not other_exits, f"processes died with unexpected exit codes: {other_exits}"
    assert under_test.hits >= hits_wanted
    report.assert_ok(dead_allowed=False)
