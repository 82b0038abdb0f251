"""F5 and F6: Redis unreachable, restarted, and losing its AOF tail.

F5 — Redis unreachable for ``OUTAGE_S`` seconds three ways (SIGKILL then restart on the
same port with the same AOF; SIGSTOP then SIGCONT; a blackhole in the fault proxy every
service connects through) while clients POST jobs to the API and two workers drain them:
the API answers 503 within its bound and never 500, workers back off and reconnect,
work resumes within seconds, and no acknowledged job is lost.

F6 — Redis restarted with AOF (``appendfsync always`` and ``everysec``) after a clean
SHUTDOWN and after SIGKILL of the redis process, with the topology running: nothing
acknowledged is lost. Then a simulated power loss (the AOF's unsynced tail cut off with
``RedisServer.truncate_aof``): with ``always`` nothing acknowledged is lost; with
``everysec`` exactly the jobs acknowledged in the last second are, and
``phoenixq reconcile`` names exactly those.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from shared.reconcile import reconcile
from shared.store import Store
from tests.fault import checker
from tests.fault.load import (
    API_BOUND_S,
    LOAD_MARGIN_S,
    HttpLoad,
    Progress,
    StoreLoad,
    Stores,
    now,
    service_env,
    settle_and_check,
)
from tests.fault.util import start
from tests.harness.proxy import FaultProxy
from tests.harness.redis_server import RedisServer
from tests.harness.services import ROOT, Topology
from tests.harness.wait import async_wait_until

pytestmark = pytest.mark.fault

def outage_s(scale: int) -> float:
    default = 20.0 if scale > 1 else 8.0
    return float(os.environ.get("PHOENIXQ_FAULT_OUTAGE_S", default))


@pytest.fixture
async def direct_store() -> AsyncIterator[Callable[..., Store]]:
    """``make(server, queue)``: a Store straight to ``server`` (closed at teardown)."""
    stores = Stores()
    yield stores.make
    await stores.close()


# -- F5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["kill", "pause", "proxy"])
async def test_redis_unreachable(how: str, redis_factory: Callable[..., RedisServer],
                                 direct_store: Callable[..., Store], ledger_path: Path,
                                 queue: str, scale: int) -> None:
    outage = outage_s(scale)
    server = redis_factory(appendonly=True)
    proxy = FaultProxy(server.port).start() if how == "proxy" else None
    url = proxy.url if proxy else server.url
    topo = Topology(url, **service_env(url, queue, ledger_path))
    store = direct_store(server, queue)
    progress = Progress(server.url, queue).start()
    load: HttpLoad | None = None
    try:
        await start(topo, "api")
        await start(topo, "scheduler")
        await start(topo, "reaper")
        workers = [await start(topo, "worker") for _ in range(2)]
        load = HttpLoad(topo.api_url, queue, prefix=f"f5-{how}").start()
        await progress.wait_growth(30, timeout=60)  # steady state first

        fault_at = time.monotonic()
        if how == "kill":
            server.kill()
        elif how == "pause":
            server.pause()
        else:
            assert proxy is not None
            proxy.blackhole(outage)
        await asyncio.sleep(outage)  # the fault lasts (a bounded sleep, not a sync point)
        ending_at = time.monotonic()
        if how == "kill":
            await asyncio.to_thread(server.start)  # same port, same AOF
        elif how == "pause":
            server.resume()
        else:
            assert proxy is not None
            await async_wait_until(lambda: now(not proxy.in_blackhole), 10,
                                   what="blackhole to end")
        back_at = time.monotonic()

        await async_wait_until(lambda: now(load.first_ack_after(back_at) is not None), 60,
                               what="the API to acknowledge again")
        await async_wait_until(lambda: now(progress.first_growth_after(back_at)), 60,
                               what="workers to complete jobs again")
        await progress.wait_growth(30, timeout=60)  # and keep going
        await load.stop()
        report = await settle_and_check(store, queue, load.acked, ledger_path,
                                        name=f"redis-{how}")
        api_back = load.first_ack_after(back_at)
        work_back = progress.first_growth_after(back_at)
        assert api_back is not None and work_back is not None
        # every retry a worker made against the dead Redis (claim, hand-back, heartbeat)
        retries = [sum(1 for ln in list(w.lines)
                       if str(ln.get("event", "")).startswith("Redis unavailable"))
                   for w in workers]
        in_outage = [ack for ack in load.ack_times if fault_at + 0.5 < ack < ending_at]
        report.publish(
            outage_s=outage, **load.figures(),
            api_recovered_in_s=round(api_back - back_at, 2),
            recovered_in_s=round(work_back - back_at, 2),
            worker_redis_retries_max=max(retries), dup_delivered_jobs=report.dup_delivered_jobs,
            acked_during_outage=len(in_outage),
        )
        report.assert_ok(dead_allowed=False)
        assert not load.bad, f"5xx other than 503: {load.bad[:5]}"
        assert load.statuses.get("503", 0) > 0, "the outage was never noticed by the API"
        assert load.max_503_s <= API_BOUND_S + LOAD_MARGIN_S, load.latency_by_status
        assert all(w.alive() for w in workers), "a worker died during the outage"
        # jittered exponential backoff (cap 5 s): a handful of tries, never a hot loop
        assert max(retries) <= 8 * outage + 20, retries
        if how != "proxy":
            assert not in_outage, "acknowledged while Redis was down?"
    finally:
        if load is not None and not load._stop.is_set():
            load._stop.set()
            for task in load._tasks:
                task.cancel()
            await asyncio.gather(*load._tasks, return_exceptions=True)
        if how == "pause":
            server.resume()  # SIGCONT, in case the test failed mid-outage
        await asyncio.to_thread(topo.stop)
        await progress.close()
        if proxy is not None:
            proxy.stop()


# -- F6: restarts -------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "everysec"])
@pytest.mark.parametrize("stop", ["shutdown", "sigkill"])
async def test_redis_restart_with_aof(fsync: str, stop: str,
                                      redis_factory: Callable[..., RedisServer],
                                      direct_store: Callable[..., Store], ledger_path: Path,
                                      queue: str, scale: int) -> None:
    server = redis_factory(appendonly=True, appendfsync=fsync)
    topo = Topology(server.url, **service_env(server.url, queue, ledger_path))
    store = direct_store(server, queue)
    progress = Progress(server.url, queue).start()
    load = StoreLoad(store, queue, prefix=f"f6-{fsync}-{stop}", delay_every=5)
    try:
        await start(topo, "scheduler")
        await start(topo, "reaper")
        await start(topo, "worker")
        load.start()
        await async_wait_until(lambda: now(len(load.acked) >= 300 * scale), 60,
                               what="acknowledged enqueues")
        await progress.wait_growth(50, timeout=60)  # jobs in every state now
        info = await store.redis.info("persistence")
        acked_before = len(load.acked)
        crash_at = time.monotonic()
        await asyncio.to_thread(server.shutdown if stop == "shutdown" else server.kill)
        await asyncio.to_thread(server.start)
        restarted_in = time.monotonic() - crash_at
        # every job acknowledged before the crash is still there, right after the reload
        early = list(load.acked)[:acked_before]
        check_store = direct_store(server, queue)
        missing_now = (await reconcile(check_store, early, queue)).missing
        await async_wait_until(lambda: now(len(load.acked) >= acked_before + 200), 60,
                               what="enqueues to resume")
        await progress.wait_growth(50, timeout=60)
        await load.stop()
        report = await settle_and_check(store, queue, load.acked, ledger_path,
                                        name=f"redis-restart-{fsync}-{stop}")
        rec = await reconcile(store, list(load.acked), queue)
        report.publish(
            acked_before_crash=acked_before, missing_after_reload=len(missing_now),
            reconcile_missing=len(rec.missing), restart_s=round(restarted_in, 2),
            aof_delayed_fsync=info.get("aof_delayed_fsync", 0),
            store_errors=load.errors, dup_delivered_jobs=report.dup_delivered_jobs,
        )
        assert missing_now == [], f"lost on restart: {missing_now[:10]}"
        assert rec.missing == []
        report.assert_ok(dead_allowed=False)
    finally:
        if load._task is not None and not load._task.done():
            load._task.cancel()
            await asyncio.gather(load._task, return_exceptions=True)
        await asyncio.to_thread(topo.stop)
        await progress.close()


# -- F6: power loss -------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_power_loss_loses_at_most_the_fsync_window(
    fsync: str, redis_factory: Callable[..., RedisServer],
    direct_store: Callable[..., Store], queue: str, tmp_path: Path,
) -> None:
    """Cut the AOF back to what the fsync policy guarantees was on disk at the crash.

    Each acknowledged enqueue notes the AOF size right after its reply (its bytes were
    written before the reply). ``always`` fsyncs before replying: the disk holds every
    acknowledged write, and only an in-flight, unacknowledged one may be torn. ``everysec``
    fsyncs once a second: the disk may miss the last second (up to two when an fsync
    is slow), so the simulation cuts the file back to its size one second before the crash.
    """
    server = redis_factory(appendonly=True, appendfsync=fsync)
    store = direct_store(server, queue)
    aof = server.aof_files()[-1]
    load = StoreLoad(store, queue, prefix=f"f6-power-{fsync}", job_type="noop",
                     on_ack=lambda _id: aof.stat().st_size)
    load.start()
    await async_wait_until(lambda: now(len(load.ack_log) >= 200), 30, what="enqueues")
    await asyncio.sleep(2.0)  # a load of more than one fsync period (bounded: data, not sync)
    crash_at = time.monotonic()
    server.kill()
    before = [(t, job_id, size) for t, job_id, size in load.ack_log if t <= crash_at]
    final_size = aof.stat().st_size
    if fsync == "always":
        synced = before[-1][2]  # everything up to the last acknowledged write
        cut = synced + (final_size - synced) // 2  # tear whatever was in flight
    else:
        window = [size for t, _id, size in before if t <= crash_at - 1.0]
        cut = window[-1] if window else before[0][2]
    predicted = sorted(job_id for _t, job_id, size in before if size > cut)
    server.truncate_aof(final_size - cut)
    await asyncio.to_thread(server.start)  # aof-load-truncated yes (the default)
    await load.stop()

    acked_before = [job_id for _t, job_id, _s in before]
    rec = await reconcile(direct_store(server, queue), acked_before, queue)
    ids_file = tmp_path / "acked.txt"
    ids_file.write_text("\n".join(acked_before) + "\n")
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "phoenixq.cli", "--redis-url", server.url, "reconcile",
         "--ids-file", str(ids_file), "--queue", queue, "--json"],
        cwd=ROOT, capture_output=True, timeout=60,
    )
    out = orjson.loads(cli.stdout)
    lost_window_ms = (crash_at - min((t for t, i, _ in before if i in predicted),
                                     default=crash_at)) * 1000
    checker.publish(f"redis-power-loss-{fsync}", {
        "acked": len(acked_before), "lost": len(rec.missing), "predicted_lost": len(predicted),
        "lost_window_ms": round(lost_window_ms), "cut_bytes": final_size - cut,
        "reconcile_exit": cli.returncode, "states": rec.states,
    })
    assert sorted(rec.missing) == predicted  # exactly the unsynced acknowledged jobs
    assert sorted(out["missing"]) == predicted and out["found"] == len(acked_before) - len(
        predicted)
    assert cli.returncode == (1 if predicted else 0), cli.stderr
    if fsync == "always":
        assert rec.missing == []
    else:
        assert predicted, "no job was acknowledged in the last second: no load?"
        assert lost_window_ms <= 1000 + 100
    assert rec.states == {"queued": len(acked_before) - len(predicted)}
