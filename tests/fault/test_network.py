"""F7: network faults between every service and Redis, through the tests' fault proxy.

The API, the scheduler, the reaper and two workers all reach Redis through a
``FaultProxy`` while clients POST jobs. Three faults, one test each:

* ``latency`` — 100 ms each way (200 ms per round trip) for ``FAULT_S`` seconds, far
  below the 3 s lease: nothing lost and *no* job delivered twice;
* ``reset`` — every connection reset with a TCP RST every 0.5 s for ``FAULT_S`` seconds:
  nothing lost; duplicate deliveries (a lost reply) are allowed and counted;
* ``blackhole`` — nothing gets through for ``FAULT_S`` seconds, then every connection
  that lost bytes is reset: nothing lost; the API answers 503 within its bound.

In every case the API never answers 500 and work resumes within seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shared.store import Store
from tests.fault import checker
from tests.fault.load import (
    API_BOUND_S,
    LOAD_MARGIN_S,
    HttpLoad,
    Progress,
    Stores,
    now,
    service_env,
    settle_and_check,
)
from tests.fault.util import start
from tests.harness.proxy import FaultProxy
from tests.harness.redis_server import RedisServer
from tests.harness.services import Topology
from tests.harness.wait import async_wait_until

pytestmark = pytest.mark.fault

LEASE_MS = 3000
LATENCY_MS = 100  # each way


def fault_s(scale: int) -> float:
    return float(os.environ.get("PHOENIXQ_FAULT_OUTAGE_S", 20.0 if scale > 1 else 6.0))


@pytest.fixture
async def direct_store() -> AsyncIterator[Callable[..., Store]]:
    stores = Stores()
    yield stores.make
    await stores.close()


@pytest.mark.parametrize("mode", ["latency", "reset", "blackhole"])
async def test_network_fault(mode: str, redis_factory: Callable[..., RedisServer],
                             direct_store: Callable[..., Store], ledger_path: Path,
                             queue: str, scale: int) -> None:
    duration = fault_s(scale)
    server = redis_factory()
    proxy = FaultProxy(server.port).start()
    env = {**service_env(proxy.url, queue, ledger_path),
           "PHOENIXQ_VISIBILITY_TIMEOUT_MS": str(LEASE_MS)}
    topo = Topology(proxy.url, **env)
    store = direct_store(server, queue)
    progress = Progress(server.url, queue).start()
    load = HttpLoad("", queue, prefix=f"f7-{mode}", payload={"seconds": 0.05})
    try:
        await start(topo, "api")
        load.api_url = topo.api_url
        await start(topo, "scheduler")
        await start(topo, "reaper")
        workers = [await start(topo, "worker") for _ in range(2)]
        load.start()
        await progress.wait_growth(30, timeout=60)
        fault_at = time.monotonic()
        resets = 0
        if mode == "latency":
            proxy.latency(LATENCY_MS)
            await asyncio.sleep(duration)  # the fault lasts
            done_during = progress.count_at(time.monotonic()) - progress.count_at(fault_at)
            proxy.pass_()
        elif mode == "reset":
            while time.monotonic() - fault_at < duration:
                resets += await asyncio.to_thread(proxy.reset)
                await asyncio.sleep(0.5)
            done_during = progress.count_at(time.monotonic()) - progress.count_at(fault_at)
        else:
            proxy.blackhole(duration)
            await async_wait_until(lambda: now(not proxy.in_blackhole), duration + 10,
                                   what="blackhole to end")
            done_during = progress.count_at(time.monotonic()) - progress.count_at(fault_at)
        back_at = time.monotonic()

        await async_wait_until(lambda: now(load.first_ack_after(back_at) is not None), 60,
                               what="the API to acknowledge again")
        await async_wait_until(lambda: now(progress.first_growth_after(back_at)), 60,
                               what="workers to complete jobs again")
        await progress.wait_growth(30, timeout=60)
        await load.stop()
        report = await settle_and_check(store, queue, load.acked, ledger_path,
                                        name=f"network-{mode}")
        api_back = load.first_ack_after(back_at)
        work_back = progress.first_growth_after(back_at)
        assert api_back is not None and work_back is not None
        lease_expiries = sum(len(p.events("Lease expired: visibility timeout"))
                             for p in topo.procs if p.name == "reaper")
        report.publish(
            fault_s=duration, **load.figures(), completed_during_fault=done_during,
            proxy_resets=resets or proxy.resets, lease_expiries=lease_expiries,
            api_recovered_in_s=round(api_back - back_at, 2),
            recovered_in_s=round(work_back - back_at, 2),
            dup_delivered_jobs=report.dup_delivered_jobs,
            latency_ms_each_way=LATENCY_MS if mode == "latency" else 0, lease_ms=LEASE_MS,
        )
        report.assert_ok(dead_allowed=False)
        assert not load.bad, f"5xx other than 503: {load.bad[:5]}"
        assert load.max_503_s <= API_BOUND_S + LOAD_MARGIN_S, load.latency_by_status
        assert all(w.alive() for w in workers)
        if mode == "latency":
            assert done_during > 0, "no progress under latency"
            assert report.dup_deliveries == 0, "a job was delivered twice under mere latency"
            assert lease_expiries == 0
        if mode == "blackhole":
            assert load.statuses.get("503", 0) > 0
    finally:
        load._stop.set()
        for task in load._tasks:
            task.cancel()
        await asyncio.gather(*load._tasks, return_exceptions=True)
        await asyncio.to_thread(topo.stop)
        await progress.close()
        proxy.stop()


async def test_lost_blmove_reply_is_handed_back(store: Store, queue: str) -> None:
    """Regression: the server ran a worker's BLMOVE but the reply was lost (reset).

    The id sat in the live worker's processing list, state ``queued``, unleased: nobody
    ran it and the reaper (which recovers dead workers only) never looked at it. Now the
    worker hands back its unclaimed ids after any claim error, and the job runs.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError

    from services.worker.service import Worker
    from shared.handlers import Registry
    from shared.jobs import JobSpec

    registry = Registry()
    ran: list[str] = []

    @registry.handler("ok")
    async def ok(job: object) -> None:
        ran.append(job.id)  # type: ignore[attr-defined]

    worker = Worker(store.settings, registry, worker_id="w-lost-reply")
    real_wait = worker.store.wait_ready
    lost: list[str | None] = []

    async def wait_ready_reply_lost(*args: object) -> str | None:
        moved = await real_wait(*args)  # type: ignore[arg-type]
        if moved is not None and not lost:
            lost.append(moved)
            raise RedisConnectionError("Connection reset by peer (reply lost)")
        return moved

    worker.store.wait_ready = wait_ready_reply_lost  # type: ignore[method-assign]
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        spec = JobSpec(type="ok", queue=queue).resolved(store.settings)
        (res,) = await store.enqueue(queue, [spec])
        await async_wait_until(
            lambda: now(ran == [res.job_id]), 15, what="the stranded job to run")
        job = await store.get_job(res.job_id, queue)
        assert lost == [res.job_id] and job.attempt == 1
        checker.publish("lost-blmove-reply", {"stranded": 1, "ran": len(ran),
                                              "attempts": job.attempt})
    finally:
        worker.stop()
        await task
        await worker.shutdown()


async def test_reset_after_blmove_ran_is_not_a_silent_retry(
    redis_factory: Callable[..., RedisServer], direct_store: Callable[..., Store], queue: str,
) -> None:
    """Regression: a connection reset after the server ran a worker's BLMOVE.

    redis-py retried the BLMOVE on a fresh connection without telling anyone, so the id
    the first BLMOVE had moved stayed in the live worker's processing list, unleased and
    unseen. Over the wire: the worker waits in BLMOVE through the proxy; the proxy
    blackholes (the reply is dropped) while a job is enqueued, then resets the connection.
    """
    from services.worker.service import Worker
    from shared.handlers import Registry
    from shared.jobs import JobSpec
    from shared.settings import Settings

    server = redis_factory()
    proxy = FaultProxy(server.port).start()
    store = direct_store(server, queue)
    settings = Settings.from_env({}, redis_url=proxy.url, queues=queue, heartbeat_ms=200,
                                 worker_ttl_ms=60_000)
    registry = Registry()
    ran: list[str] = []

    @registry.handler("ok")
    async def ok(job: object) -> None:
        ran.append(job.id)  # type: ignore[attr-defined]

    worker = Worker(settings, registry, worker_id="w-reset")
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        async def blocked() -> bool:
            clients = await store.redis.client_list()
            return any(c.get("cmd") == "blmove" and int(c.get("age", 9)) < 1 for c in clients)

        await async_wait_until(blocked, 10, what="the worker to wait in BLMOVE")
        proxy.blackhole(1.0)
        spec = JobSpec(type="ok", queue=queue).resolved(store.settings)
        (res,) = await store.enqueue(queue, [spec])
        moved = await store.processing_ids(queue, "w-reset")
        await async_wait_until(lambda: now(not proxy.in_blackhole), 10, what="blackhole end")
        await async_wait_until(lambda: now(ran == [res.job_id]), 15,
                               what="the job the lost BLMOVE moved to run")
        checker.publish("reset-after-blmove", {"moved_during_blackhole": len(moved),
                                               "ran": len(ran), "proxy_resets": proxy.resets})
    finally:
        worker.stop()
        await task
        await worker.shutdown()
        proxy.stop()
