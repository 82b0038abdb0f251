"""F11: retention leaves nothing behind; a full Redis refuses enqueues cleanly.

* After a run (completed, dead, cancelled and idempotent jobs) and the retention period
  (short settings through the environment), a SCAN of the whole keyspace finds no job
  hash outside its index (completed / dead / ready / scheduled / retry / leases) without
  a TTL, no processing list, no lease, and no key outside an allow-list.
* Redis at its ``maxmemory`` with ``noeviction``: enqueue through the Store fails with
  Redis's OOM error and through the API answers 503/507 (never 500, never a hang); no
  job is half-written (every job hash has its ready/scheduled entry and vice versa);
  once memory is available again, enqueues and a worker that met the OOM carry on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.exceptions import OutOfMemoryError

from shared import keys
from shared.jobs import JobSpec
from shared.store import Store
from tests.fault import checker
from tests.fault import ledger_handlers as ledger
from tests.fault.load import Stores, now, service_env, settle_and_check
from tests.fault.util import effect_specs, enqueue, start
from tests.harness.redis_server import RedisServer
from tests.harness.services import Topology
from tests.harness.wait import async_wait_until

pytestmark = pytest.mark.fault

RETENTION = {"PHOENIXQ_COMPLETED_RETENTION_MS": "1000", "PHOENIXQ_DEAD_RETENTION_MS": "1000",
             "PHOENIXQ_IDEMPOTENCY_TTL_MS": "3000"}


@pytest.fixture
async def direct_store() -> AsyncIterator[Callable[..., Store]]:
    stores = Stores()
    yield stores.make
    await stores.close()


async def scan_keyspace(store: Store, queue: str) -> dict[str, Any]:
    """Every key, classified; the violations of the retention rules listed."""
    r = store.redis
    prefix = keys.queue_prefix(queue)
    indexes: set[str] = set()
    for name in (keys.completed(queue), keys.dead(queue), keys.scheduled(queue),
                 keys.retry(queue), keys.leases(queue)):
        indexes |= {i.decode() for i in await r.zrange(name, 0, -1)}
    indexes |= {i.decode() for i in await r.lrange(keys.ready(queue), 0, -1)}
    kinds: Counter[str] = Counter()
    bad: list[str] = []
    async for raw in r.scan_iter(match="*", count=1000):
        key = raw.decode()
        ttl = await r.pttl(key)
        if key.startswith(keys.job_prefix(queue)):
            kinds["job"] += 1
            if key[len(keys.job_prefix(queue)):] not in indexes and ttl < 0:
                bad.append(f"{key}: job without index entry or TTL")
        elif key.startswith(keys.processing_prefix(queue)):
            kinds["processing"] += 1
            bad.append(f"{key}: processing list left")
        elif key.startswith((keys.idem_prefix(queue), keys.done_prefix(queue))):
            kinds[key[len(prefix):].split(":")[0]] += 1
            if ttl < 0:
                bad.append(f"{key}: idempotency key without TTL")
        elif key.startswith(keys.worker_info_pattern()[:-1]):
            kinds["worker_info"] += 1
            if ttl < 0:
                bad.append(f"{key}: worker info without TTL")
        elif key in (keys.events(queue), keys.workers(queue), keys.completed(queue),
                     keys.dead(queue), keys.queues()):
            kinds[key.rsplit(":", 1)[-1]] += 1
        elif key in (keys.leases(queue), keys.ready(queue), keys.scheduled(queue),
                     keys.retry(queue)):
            kinds[key.rsplit(":", 1)[-1]] += 1
            if key == keys.leases(queue):
                bad.append(f"{key}: leases left")
        else:
            bad.append(f"{key}: not in the allow-list")
    return {"kinds": dict(kinds), "bad": bad}


async def test_retention_leaves_nothing_behind(
    redis_factory: Callable[..., RedisServer], direct_store: Callable[..., Store],
    ledger_path: Path, queue: str, scale: int,
) -> None:
    server = redis_factory()
    topo = Topology(server.url, **service_env(server.url, queue, ledger_path), **RETENTION)
    store = direct_store(server, queue)
    store.settings = type(store.settings).from_env(
        {**RETENTION}, redis_url=server.url, queues=queue,
        events_maxlen=store.settings.events_maxlen)
    try:
        await start(topo, "scheduler")
        reaper = await start(topo, "reaper")
        await start(topo, "worker")
        n = 200 * scale
        acked = await enqueue(store, queue, effect_specs(queue, n, prefix="ok"))
        acked |= await enqueue(store, queue, [
            JobSpec(type="ledger.raise", queue=queue, max_attempts=2, backoff_base_ms=50,
                    backoff_cap_ms=100) for _ in range(20)])
        acked |= await enqueue(store, queue, effect_specs(queue, 20, prefix="later",
                                                          delay_ms=60_000))
        for job_id, key in list(acked.items()):
            if key and key.startswith("later"):
                await store.cancel(queue, job_id)
        raise_ids = [i for i, k in acked.items() if k is None]

        async def all_ran() -> bool:
            """Every job ran its course (jobs vanish with retention: the ledger tells)."""
            data = ledger.read(ledger_path)
            left = await checker.leftovers(store, queue)
            return (sum(1 for k in data.applied if k.startswith("ok-")) == n
                    and all(len(data.runs(i)) == 2 for i in raise_ids)
                    and not any(left.values()))

        await async_wait_until(all_ran, 120, interval=0.25, what="every job to run")
        before = await scan_keyspace(store, queue)
        # the reaper trims every 10 s; completed jobs also carry their own TTL
        started = time.monotonic()

        async def trimmed() -> bool:
            return (await store.redis.zcard(keys.completed(queue)) == 0
                    and await store.redis.zcard(keys.dead(queue)) == 0
                    and not [k async for k in store.redis.scan_iter(
                        match=keys.job_prefix(queue) + "*", count=1000)])

        await async_wait_until(trimmed, 60, interval=0.25, what="retention to trim every job")
        trimmed_in = time.monotonic() - started
        after = await scan_keyspace(store, queue)
        info = await store.redis.info("memory")
        data = ledger.read(ledger_path)
        checker.publish("retention", {
            "jobs": len(acked), "completed": n, "dead": len(raise_ids), "cancelled": 20,
            "keys_before": sum(before["kinds"].values()),
            "keys_after": sum(after["kinds"].values()),
            "key_kinds_after": " ".join(f"{k}:{v}" for k, v in sorted(after["kinds"].items())),
            "violations": len(before["bad"]) + len(after["bad"]),
            "trimmed_in_s": round(trimmed_in, 1),
            "used_memory_kb": round(info["used_memory"] / 1024),
            "trims_logged": len(reaper.events("Trimmed retention")),
        })
        assert not any(data.runs(i) for i, k in acked.items() if k and k.startswith("later"))
        assert max(data.applied.values()) == 1
        assert before["bad"] == [], before["bad"][:10]
        assert after["bad"] == [], after["bad"][:10]
        assert after["kinds"].get("job", 0) == 0
    finally:
        await asyncio.to_thread(topo.stop)


async def test_full_redis_refuses_enqueues_cleanly(
    redis_factory: Callable[..., RedisServer], direct_store: Callable[..., Store],
    ledger_path: Path, queue: str,
) -> None:
    server = redis_factory(maxmemory="8mb")
    store = direct_store(server, queue)
    topo = Topology(server.url, **service_env(server.url, queue, ledger_path))
    payload = {"blob": "x" * 20_000}
    try:
        api = await start(topo, "api")
        # a running worker (queue paused, so it idles) and one started at the OOM below
        await store.pause(queue)
        await start(topo, "reaper")
        early = await start(topo, "worker")
        # fill Redis with acknowledged jobs until it refuses
        acked: list[str] = []
        store_error = ""
        while True:
            spec = JobSpec(type="ledger.effect", queue=queue, payload=payload,
                           delay_ms=500 if len(acked) % 3 == 0 else 0).resolved(store.settings)
            try:
                (res,) = await store.enqueue(queue, [spec])
            except OutOfMemoryError as exc:  # redis-py's class for Redis's "OOM ..." reply
                store_error = f"OOM {exc}"
                break
            acked.append(res.job_id)
            assert len(acked) < 5000, "maxmemory never reached"
        assert store_error.startswith("OOM"), store_error

        statuses: Counter[int] = Counter()
        slowest = 0.0
        bodies: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http:
            for i in range(10):
                t0 = time.monotonic()
                async with http.post(f"{topo.api_url}/jobs", json={
                    "type": "ledger.effect", "queue": queue, "payload": payload,
                    "idempotencyKey": f"oom-{i}"}) as resp:
                    statuses[resp.status] += 1
                    bodies.append(await resp.json(content_type=None))
                slowest = max(slowest, time.monotonic() - t0)
        half = await half_written(store, queue)
        hashes = half["hashes"]

        # the workers and the scheduler meet the full Redis (their writes are refused too)
        worker = await start(topo, "worker")
        await start(topo, "scheduler")
        for proc in (early, worker):
            await async_wait_until(
                lambda p=proc: now(not p.alive() or any(
                    str(ln.get("event", "")).startswith("Redis unavailable")
                    for ln in p.lines)), 15, what="the workers to meet the OOM")
            assert proc.alive(), "a worker died of the OOM: " + "\n".join(proc.raw[-5:])
        # memory back: enqueues work again, and the same workers drain everything
        server.cli("CONFIG", "SET", "maxmemory", "0")
        await store.resume(queue)
        extra = await enqueue(store, queue, effect_specs(queue, 10, prefix="after"))
        everything = {**{i: None for i in acked}, **extra}
        report = await settle_and_check(store, queue, everything, ledger_path,
                                        name="redis-oom", timeout=120)
        report.publish(acked_before_oom=len(acked), store_error=store_error[:40].replace(
            " ", "_"), api_statuses=" ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
            api_slowest_s=round(slowest, 3), half_written=len(half["orphans"]),
            hashes_at_oom=hashes, workers_alive=early.alive() and worker.alive(),
            dup_delivered_jobs=report.dup_delivered_jobs)
        assert set(statuses) <= {503, 507}, (statuses, bodies[:2])
        assert half["orphans"] == [], half["orphans"][:10]
        assert hashes == len(acked)
        assert not any(ln.get("level") == "error" and "Unhandled" in ln.get("event", "")
                       for ln in api.lines)
        report.assert_ok(dead_allowed=False)
        assert report.dup_deliveries == 0  # heartbeats survived: no live worker recovered
    finally:
        await asyncio.to_thread(topo.stop)


async def half_written(store: Store, queue: str) -> dict[str, Any]:
    """Job hashes without their ready/scheduled entry, and entries without a hash."""
    r = store.redis
    ids = {k.decode()[len(keys.job_prefix(queue)):] async for k in r.scan_iter(
        match=keys.job_prefix(queue) + "*", count=1000)}
    ready = [i.decode() for i in await r.lrange(keys.ready(queue), 0, -1)]
    sched = [i.decode() for i in await r.zrange(keys.scheduled(queue), 0, -1)]
    placed = Counter(ready + sched)
    orphans = sorted({i for i in ids if placed[i] != 1} | {i for i in placed if i not in ids})
    return {"hashes": len(ids), "orphans": orphans}

