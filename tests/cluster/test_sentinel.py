"""Failover under Sentinel: kill the master mid-run; the services follow the promoted replica.

A master, one replica and three sentinels; every service has
``REDIS_URL=redis+sentinel://.../phx``. A producer enqueues over HTTP, the master is
SIGKILLed, the sentinels promote the replica, the old master comes back and rejoins as
a replica. The test reports how many acknowledged (202) jobs the new master does not
have: with asynchronous replication some may be lost; with
``PHOENIXQ_DURABLE_ENQUEUE_REPLICAS=1`` (WAIT after the enqueue script) none are.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.connection import connect
from shared.jobs import JobSpec
from shared.reconcile import reconcile
from shared.settings import Settings
from shared.store import NotReplicated, Store
from tests.cluster.load import Producer
from tests.harness.sentinel import LocalSentinel
from tests.harness.services import Topology
from tests.harness.wait import async_wait_until

pytestmark = pytest.mark.sentinel


@pytest.fixture
def queue() -> str:
    """A fresh queue name (no cluster needed: this module runs on Sentinel)."""
    return f"q-{uuid.uuid4().hex[:10]}"
TOTAL = 600
KILL_AFTER = 200


@pytest.mark.parametrize("durable", [
    False,
    pytest.param(True),
], ids=["async-replication", "wait-1-replica"])
async def test_master_killed_mid_run(queue, durable, capsys):
    with LocalSentinel(replicas=1) as sentinels:
        env = {"PHOENIXQ_QUEUES": queue,
               "PHOENIXQ_DURABLE_ENQUEUE_REPLICAS": "1" if durable else "0"}
        topo = Topology(sentinels.url, **env)
        try:
            await _run(sentinels, topo, queue, durable, capsys)
        finally:
            topo.stop()


async def _run(sentinels: LocalSentinel, topo: Topology, queue: str, durable: bool,
               capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("api", "scheduler", "reaper", "worker"):
        topo.start(name)
    producer = Producer(topo.api_url, [queue])
    run = asyncio.create_task(producer.run(total=TOTAL, concurrency=8))
    await async_wait_until(lambda: _now(len(producer.acked) >= KILL_AFTER), 30, what="load")
    old = sentinels.node(sentinels.master_port() or 0)
    old.kill()
    killed = time.monotonic()
    new = await asyncio.to_thread(sentinels.wait_failover, old.port)
    promoted_s = time.monotonic() - killed
    old.start()  # back empty: the sentinels turn it into a replica of the new master
    await asyncio.to_thread(sentinels.wait_replica_of, old, new)
    await asyncio.wait_for(run, 120)
    missing = await _missing(sentinels.url, queue, producer.acked)
    with capsys.disabled():
        print(f"\n[failover durable={durable}] acked={len(producer.acked)} lost={len(missing)} "
              f"promoted_in={promoted_s:.2f}s refused={producer.refused} "
              f"longest_gap={max(producer.gaps, default=0):.2f}s")
    assert len(producer.acked) == TOTAL
    assert all(p.alive() for p in topo.procs)  # reconnected, not crashed
    if durable:
        assert missing == []
    await _completed(sentinels.url, queue, TOTAL - len(missing))


async def _now(value: object) -> object:
    return value


async def _missing(url: str, queue: str, ids: list[str]) -> list[str]:
    settings = Settings.from_env({}, redis_url=url)
    client = connect(settings)
    try:
        return (await reconcile(Store(client, settings), ids, queue)).missing
    finally:
        await client.aclose()


async def _completed(url: str, queue: str, count: int) -> None:
    settings = Settings.from_env({}, redis_url=url)
    client = connect(settings)
    store = Store(client, settings)

    async def done() -> bool:
        return (await store.queue_stats(queue)).completed >= count

    try:
        await async_wait_until(done, 60, 0.2, what=f"{count} completed after the failover")
    finally:
        await client.aclose()


async def test_durable_enqueue_waits_for_replicas_across_a_failover(queue):
    """WAIT after the script: 503-worthy NotReplicated when too few replicas ack."""
    with LocalSentinel(replicas=1) as sentinels:
        settings = Settings.from_env({}, redis_url=sentinels.url, durable_enqueue_replicas=1)
        client = connect(settings)
        try:
            store = Store(client, settings)
            (first,) = await store.enqueue(queue, [JobSpec("noop", queue=queue).resolved(settings)])
            greedy = Settings.from_env({}, redis_url=sentinels.url, durable_enqueue_replicas=2,
                                       durable_enqueue_timeout_ms=200)
            with pytest.raises(NotReplicated):
                await Store(client, greedy).enqueue(queue, [JobSpec("noop", queue=queue)
                                                           .resolved(greedy)])
            old = sentinels.node(sentinels.master_port() or 0)
            old.kill()
            new = await asyncio.to_thread(sentinels.wait_failover, old.port)
            old.start()
            await asyncio.to_thread(sentinels.wait_replica_of, old, new)
            ids = [first.job_id]
            for _ in range(3):  # the first call may meet the dead master's connection
                try:
                    (res,) = await store.enqueue(queue, [JobSpec("noop", queue=queue)
                                                         .resolved(settings)])
                    ids.append(res.job_id)
                except (ConnectionError, OSError, NotReplicated):
                    continue
            assert len(ids) >= 3
            assert (await reconcile(store, ids, queue)).missing == []
        finally:
            await client.aclose()
