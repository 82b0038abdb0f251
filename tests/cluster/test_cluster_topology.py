"""The real services on a 3-master Redis Cluster, one queue on each master.

REDIS_URL is ``redis+cluster://...`` for every process. One topology serves three
queues whose hash tags live on three different masters; jobs arrive over HTTP.
"""

from __future__ import annotations

import asyncio

import pytest

from shared import keys
from shared.connection import connect
from shared.reconcile import reconcile
from shared.settings import Settings
from shared.store import Store
from tests.cluster.load import Producer
from tests.harness.cluster import LocalCluster
from tests.harness.services import Topology
from tests.harness.wait import async_wait_until, wait_until
from tests.test_e2e import post_job, wait_status

pytestmark = pytest.mark.cluster


@pytest.fixture
def spread(cluster: LocalCluster, request: pytest.FixtureRequest) -> list[str]:
    """Three fresh queue names on three different masters."""
    return cluster.tags_on_distinct_masters(f"{request.node.name[:20]}-{id(request)}", 3)


@pytest.fixture
def cluster_topology(cluster: LocalCluster, spread: list[str]) -> Topology:
    topo = Topology(cluster.url, PHOENIXQ_QUEUES=",".join(spread))
    yield topo
    topo.stop()


async def test_three_queues_on_three_masters(cluster, spread, cluster_topology):
    topo = cluster_topology
    assert len({cluster.owner(cluster.keyslot(q)).port for q in spread}) == 3
    for name in ("api", "scheduler", "reaper", "worker"):
        topo.start(name)
    rescuer = topo.start("worker")
    done, delayed, dead, slow = [], [], [], []
    for q in spread:
        done.append((await post_job(topo, {"type": "noop", "queue": q}))["jobId"])
        delayed.append((await post_job(topo, {"type": "noop", "queue": q,
                                              "delayMs": 800}))["jobId"])
        dead.append((await post_job(topo, {"type": "fail.always", "queue": q,
                                           "maxAttempts": 2}))["jobId"])
    for job_id in done + delayed:
        job = await wait_status(topo, job_id, "completed")
        assert job["attempts"] == 1
    for job_id in dead:
        job = await wait_status(topo, job_id, "dead")
        assert job["attempts"] == 2
    # SIGKILL whichever worker holds a slow job on each queue: the other finishes them
    for q in spread:
        slow.append((await post_job(topo, {"type": "sleep", "payload": {"seconds": 1},
                                           "queue": q, "visibilityTimeoutMs": 60_000}))["jobId"])
    jobs = [await wait_status(topo, j, "processing") for j in slow]
    victims = {j["worker"] for j in jobs}
    for proc in [p for p in topo.procs if p.name == "worker"]:
        if proc.lines and proc.lines[0].get("worker_id") in victims:
            proc.kill()
    if not rescuer.alive():  # both workers held a slow job: bring one up to recover them
        rescuer = topo.start("worker")
    for job_id in slow:
        job = await wait_status(topo, job_id, "completed", timeout=30)
        assert job["attempts"] in (1, 2)
    assert rescuer.alive()
    stats = await _stats(cluster, spread)
    assert [s.dead for s in stats] == [1, 1, 1]


async def _stats(cluster: LocalCluster, queues: list[str]) -> list:
    settings = Settings.from_env({}, redis_url=cluster.url)
    client = connect(settings)
    try:
        store = Store(client, settings)
        return [await store.queue_stats(q) for q in queues]
    finally:
        await client.aclose()


async def test_slot_migration_of_a_busy_queue_loses_no_job(cluster, spread, cluster_topology):
    """Move the busy queue's slot to another master mid-run: ASK/MOVED/TRYAGAIN retried."""
    topo, busy = cluster_topology, spread[0]
    for name in ("api", "scheduler", "reaper", "worker", "worker"):
        topo.start(name)
    producer = Producer(topo.api_url, [busy], {"type": "sleep", "payload": {"seconds": 0.02}})
    run = asyncio.create_task(producer.run(total=600))
    await async_wait_until(lambda: _async(len(producer.acked) >= 100), 30, what="load")
    slot = cluster.keyslot(keys.ready(busy))
    source = cluster.owner(slot)
    target = next(n for n in cluster.primaries() if n is not source)
    moved = await asyncio.to_thread(cluster.migrate_slot, slot, target, 100_000)
    assert cluster.owner(slot) is target and moved > 0
    await asyncio.wait_for(run, 90)
    report = await _reconcile(cluster, busy, producer.acked)
    assert report.missing == [] and len(producer.acked) == 600
    await _all_completed(cluster, busy, 600)
    assert all(p.alive() for p in topo.procs)
    wait_until(lambda: True)


async def _async(value: object) -> object:
    return value


async def _reconcile(cluster: LocalCluster, queue: str, ids: list[str]):
    settings = Settings.from_env({}, redis_url=cluster.url)
    client = connect(settings)
    try:
        return await reconcile(Store(client, settings), ids, queue)
    finally:
        await client.aclose()


async def _all_completed(cluster: LocalCluster, queue: str, count: int) -> None:
    async def check() -> bool:
        (stats,) = await _stats(cluster, [queue])
        return stats.completed == count

    await async_wait_until(check, 60, 0.2, what=f"{count} jobs completed")
