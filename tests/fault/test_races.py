"""F8: three schedulers and three reapers racing over the same queue.

Attacks "every transition is one atomic script, so replicas racing is harmless": 10k
delayed jobs fall due within a few seconds while three schedulers promote them; a frozen
worker's short leases expire while three reapers expire them; a killed worker is
recovered while three reapers recover it. Counted per job in the queue's events stream:
one promotion (``queued`` with ``from=scheduled``) per delayed job, one ``retrying`` per
expired or recovered attempt; and in the ledger: each delayed job delivered exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter

import pytest

from shared import keys
from shared.store import Store
from tests.fault import checker
from tests.fault import ledger_handlers as ledger
from tests.fault.util import effect_specs, enqueue, events_of, is_stopped, start, wait_for
from tests.harness.services import Topology

pytestmark = pytest.mark.fault


async def test_racing_schedulers_and_reapers(fault_topology: Topology, fault_store: Store,
                                             queue: str, ledger_path, scale: int) -> None:
    delayed_n, frozen_n, killed_n = 10_000 * scale, 300 * scale, 100 * scale
    started = time.monotonic()
    topo = fault_topology
    reapers = await asyncio.gather(*(start(topo, "reaper") for _ in range(3)))
    await asyncio.gather(*(start(topo, "scheduler") for _ in range(3)))

    # A zombie that freezes holding frozen_n jobs with 500 ms leases.
    zombie = topo.start("worker", PHOENIXQ_WORKER_TTL_MS="300000",
                        PHOENIXQ_CONCURRENCY=str(frozen_n + 8))
    frozen = await enqueue(fault_store, queue, effect_specs(
        queue, frozen_n, "ledger.freeze", prefix="frozen", payload={"group": frozen_n},
        # a long backoff keeps them out of the victim's hands until it is dead
        visibility_timeout_ms=500, backoff_base_ms=10_000, backoff_cap_ms=10_000))
    await wait_for(lambda: is_stopped(zombie.pid), 60, "the zombie to freeze")

    # A worker killed holding killed_n claimed jobs (long leases: only death frees them).
    victim = topo.start("worker", PHOENIXQ_CONCURRENCY=str(killed_n + 8))
    killed = await enqueue(fault_store, queue, effect_specs(
        queue, killed_n, "ledger.sleep", prefix="killed", payload={"seconds": 1},
        visibility_timeout_ms=300_000, backoff_base_ms=50, backoff_cap_ms=200))
    await wait_for(lambda: len({line["job_id"] for line in victim.events("Handling job")}
                               & set(killed)) >= killed_n, 60, "the victim to run its jobs")
    victim.kill()

    await asyncio.gather(start(topo, "worker", PHOENIXQ_CONCURRENCY="32"),
                         start(topo, "worker", PHOENIXQ_CONCURRENCY="32"))
    rng = random.Random()
    specs = effect_specs(queue, delayed_n, prefix="delayed")
    for spec in specs:
        spec.delay_ms = rng.randint(1000, 4000)
    delayed = await enqueue(fault_store, queue, specs)

    acked = {**frozen, **killed, **delayed}
    await checker.settle(fault_store, queue, len(acked), timeout=240)
    zombie.signal(signal.SIGKILL)  # it stays frozen to the end; now it goes
    report = await checker.check(fault_store, queue, acked, ledger_path, name="races")
    data = report.ledger
    events = await events_of(fault_store, queue)
    promoted = Counter(e["job"] for e in events
                       if e["event"] == "queued" and e.get("from") == "scheduled")
    retried = Counter(e["job"] for e in events if e["event"] == "retrying")
    requeued_attempts = Counter((e["job"], e["attempt"]) for e in events
                                if e["event"] == "retrying")
    double_promotions = sum(n - 1 for n in promoted.values() if n > 1)
    double_requeues = sum(n - 1 for n in requeued_attempts.values() if n > 1)
    expired_by = Counter(p.pid for p in reapers
                         for _ in p.events("Lease expired: visibility timeout"))
    recoveries = [line for p in reapers for line in p.events("Recovered jobs of a dead worker")]
    report.publish(
        delayed=delayed_n, frozen=frozen_n, killed=killed_n, schedulers=3, reapers=3,
        double_promotions=double_promotions, double_requeues=double_requeues,
        promotions=sum(promoted.values()), lease_expiries=sum(expired_by.values()),
        reapers_expiring=len(expired_by), worker_recoveries=len(recoveries),
        delayed_dup_deliveries=sum(len(data.runs(i)) - 1 for i in delayed),
        runtime_s=round(time.monotonic() - started, 1),
    )
    report.assert_ok(dead_allowed=False)
    assert double_promotions == 0 and double_requeues == 0
    assert set(promoted) == set(delayed)  # every delayed job promoted, exactly once
    for job_id in delayed:  # no worker died: each delivered exactly once
        assert len(data.runs(job_id)) == 1
        assert report.jobs[job_id].attempt == 1  # type: ignore[union-attr]
    for job_id in [*frozen, *killed]:  # one retry each, by one reaper, then done once
        assert retried[job_id] == 1
        assert report.jobs[job_id].attempt == 2  # type: ignore[union-attr]
    assert sum(expired_by.values()) == frozen_n
    assert len(recoveries) == 1 and recoveries[0]["retrying"] == killed_n
    assert sum(data.applied.values()) == len(acked)
    assert all(data.applied[k] == 1 for k in (ledger.effect_key(j) for j in
               report.jobs.values() if j is not None))
    assert not await fault_store.redis.exists(keys.scheduled(queue))
