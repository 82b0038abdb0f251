"""F9: skewed clocks on the worker and scheduler hosts change nothing: Redis's clock rules.

The scheduler and one worker run with their wall clock 5 minutes *ahead*, a second
worker 5 minutes *behind* (libfaketime, ``LD_PRELOAD``; without it, a ``sitecustomize``
that shifts ``time.time``). Were any due time, lease or liveness deadline computed on a
service's clock, the fast scheduler would promote delayed jobs 5 minutes early, and the
slow worker's leases and heartbeats would be 5 minutes stale the moment they were
written, so the reaper would expire them at once. Checked:

* no early promotion: every delayed job's promotion event (a stream id is Redis time)
  and its start are at or after its due time;
* no premature lease expiry: long handlers (longer than their lease, kept alive by
  extensions) run once, no lease expires, no live worker is declared dead;
* nothing lost, nothing run twice.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shared import keys
from shared.store import Store
from tests.fault import checker
from tests.fault.load import Stores, service_env, settle_and_check
from tests.fault.util import effect_specs, enqueue, start
from tests.harness.redis_server import RedisServer
from tests.harness.services import Topology

pytestmark = pytest.mark.fault

SKEW_S = 300
LEASE_MS = 1500
SITECUSTOMIZE = '''\
import os, time
_offset = float(os.environ["PHX_TIME_OFFSET_S"])
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + _offset
time.time_ns = lambda: _time_ns() + int(_offset * 1e9)
'''


def libfaketime() -> str | None:
    if shutil.which("faketime") is None:
        return None
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")) + sorted(
        glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


def skewed(offset_s: int, tmp: Path) -> tuple[str, dict[str, str]]:
    """(how, env) running a service with its wall clock shifted by ``offset_s``."""
    lib = libfaketime()
    if lib:
        return "libfaketime", {"LD_PRELOAD": lib, "FAKETIME": f"{offset_s:+d}s",
                               "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                               "FAKETIME_DONT_RESET": "1"}
    site = tmp / f"skew{offset_s:+d}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return "sitecustomize", {"PYTHONPATH": str(site), "PHX_TIME_OFFSET_S": str(offset_s)}


@pytest.fixture
async def direct_store() -> AsyncIterator[Callable[..., Store]]:
    stores = Stores()
    yield stores.make
    await stores.close()


async def test_skewed_clocks_change_nothing(
    redis_factory: Callable[..., RedisServer], direct_store: Callable[..., Store],
    ledger_path: Path, queue: str, tmp_path: Path, scale: int,
) -> None:
    server = redis_factory()
    store = direct_store(server, queue)
    topo = Topology(server.url, **service_env(server.url, queue, ledger_path))
    how, ahead = skewed(+SKEW_S, tmp_path)
    _, behind = skewed(-SKEW_S, tmp_path)
    try:
        await start(topo, "reaper")
        scheduler = await start(topo, "scheduler", **ahead)
        fast = await start(topo, "worker", **ahead)
        slow = await start(topo, "worker", **behind)
        # the skew is real: each process stamps its log lines with its own clock
        real_ms = await store.redis_time_ms()
        skews = {p.name + ("+" if p is not slow else "-"): _skew_s(p, real_ms)
                 for p in (scheduler, fast, slow)}
        assert all(abs(abs(s) - SKEW_S) < 60 for s in skews.values()), skews

        n = 40 * scale
        acked = await enqueue(store, queue, effect_specs(queue, n, prefix="now"))
        acked |= await enqueue(store, queue, effect_specs(
            queue, n, prefix="later", delay_ms=2000))
        acked |= await enqueue(store, queue, effect_specs(
            queue, 8, job_type="ledger.sleep", prefix="long", payload={"seconds": 3},
            visibility_timeout_ms=LEASE_MS))
        report = await settle_and_check(store, queue, acked, ledger_path, name="clock-skew",
                                        timeout=120)

        jobs = await checker.fetch_jobs(store, queue, acked)
        promoted = {e["job"]: int(e["_id"].split("-")[0]) for e in await _events(store, queue)
                    if e["event"] == "queued" and e.get("from") == "scheduled"}
        delayed = [j for j in jobs.values() if j is not None and j.idempotency_key
                   and j.idempotency_key.startswith("later")]
        early = [j.id for j in delayed if promoted.get(j.id, 0) < j.available_at]
        early_start = [j.id for j in jobs.values()
                       if j is not None and (j.started_at or 0) < j.available_at]
        lateness = [promoted[j.id] - j.available_at for j in delayed if j.id in promoted]
        long_jobs = [j for j in jobs.values() if j is not None and j.type == "ledger.sleep"]
        expired = [ln for p in topo.procs if p.name == "reaper"
                   for ln in p.events("Lease expired: visibility timeout")]
        recovered = [ln for p in topo.procs if p.name == "reaper"
                     for ln in p.events("Recovered jobs of a dead worker")]
        by_worker = {w: sum(1 for j in jobs.values() if j is not None and j.worker == w)
                     for w in (fast.events("Worker starting")[0]["worker_id"],
                               slow.events("Worker starting")[0]["worker_id"])}
        n_ahead, n_behind = by_worker.values()
        report.publish(
            skew_via=how, skew_s=SKEW_S, delayed=len(delayed), early_promotions=len(early),
            early_starts=len(early_start),
            promotion_lateness_max_ms=max(lateness, default=0),
            long_jobs=len(long_jobs), lease_ms=LEASE_MS, lease_expiries=len(expired),
            workers_declared_dead=len(recovered), jobs_worker_ahead=n_ahead,
            jobs_worker_behind=n_behind,
            measured_skews_s="/".join(f"{v:+.0f}" for v in skews.values()),
            dup_delivered_jobs=report.dup_delivered_jobs,
        )
        report.assert_ok(dead_allowed=False)
        assert len(promoted) >= len(delayed) and not early, early[:5]
        assert not early_start, early_start[:5]
        assert not expired and not recovered
        assert all(j.attempt == 1 for j in jobs.values() if j is not None)
        assert report.dup_deliveries == 0
        assert all(by_worker.values()), f"both skewed workers should have run jobs: {by_worker}"
    finally:
        topo.stop()


def _skew_s(proc: object, real_ms: int) -> float:
    """The process's clock minus Redis's, from the ts of its first log line."""
    from datetime import datetime

    line = proc.lines[0]  # type: ignore[attr-defined]
    stamp = datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()
    return stamp - real_ms / 1000


async def _events(store: Store, queue: str) -> list[dict[str, str]]:
    rows = await store.redis.xrange(keys.events(queue), count=1_000_000)
    out = []
    for entry_id, fields in rows:
        event = {k.decode(): v.decode() for k, v in fields.items()}
        event["_id"] = entry_id.decode()
        out.append(event)
    return out
