"""History checker for the fault suite, in the spirit of Jepsen's total-queue check.

Inputs: the enqueues the test got an acknowledgement for (job id -> idempotency key),
the ledger written by ``tests.fault.ledger_handlers``, and the final Redis state.
Output: a ``Report`` with

* ``lost``           acknowledged, but neither completed, dead nor cancelled (must be 0)
* ``unexpected``     executed, completed or dead, but never acknowledged (must be 0)
* ``dup_deliveries`` handler executions beyond the first, per job (allowed; counted)
* ``dup_effects``    guarded effects applied more than once per key (must be 0)
* ``lost_effects``   completed effect jobs whose key has no applied effect (must be 0)
* ``stuck``          in ``processing`` with no live lease (must be 0 after recovery)
* ``leftover``       ids still in ready / scheduled / retry / leases / processing lists

Usage (the whole API)::

    await settle(store, queue, expected=len(acked), timeout=120)   # wait, don't sleep
    report = await check(store, queue, acked, ledger_path, name="kill-workers")
    report.publish(recovery_ms=[...], kills=10)   # one FAULT line + results/<name>.json
    report.assert_ok()                           # lost/unexpected/dup_effects/stuck == 0

``publish(name, figures)`` alone writes a figures line for tests that are not a
total-queue check. Every published line is printed again at the end of the session
(``pytest_terminal_summary`` in ``tests/fault/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import keys
from shared.jobs import Job
from shared.store import Store
from tests.fault import ledger_handlers as ledger

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Handler types that apply a guarded effect when they complete.
EFFECT_TYPES = frozenset({"ledger.effect", "ledger.sleep", "ledger.freeze"})
TERMINAL = frozenset({"completed", "dead", "cancelled"})
#: Every line published in this session, for the terminal summary.
LINES: list[str] = []


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, list | tuple | set):
        return str(len(value))
    return str(value)


def publish(name: str, figures: Mapping[str, Any]) -> str:
    """Print ``FAULT <name>: k=v ...`` and write ``results/<name>.json``; returns the line."""
    line = f"FAULT {name}: " + " ".join(f"{k}={_fmt(v)}" for k, v in figures.items())
    print(line)
    LINES.append(line)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "line": line, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "figures": {k: (sorted(v) if isinstance(v, set) else v) for k, v in figures.items()}}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return line


@dataclass
class Report:
    name: str
    acked: int
    jobs: dict[str, Job | None]
    ledger: ledger.LedgerData
    completed: int = 0
    dead: int = 0
    cancelled: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dup_deliveries: int = 0
    dup_delivered_jobs: int = 0
    dup_effects: int = 0
    lost_effects: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    leftover: dict[str, int] = field(default_factory=dict)

    def figures(self, recovery_ms: Sequence[float] = (), **extra: Any) -> dict[str, Any]:
        figs: dict[str, Any] = {
            "acked": self.acked, "completed": self.completed, "dead": self.dead,
            "lost": len(self.lost), "unexpected": len(self.unexpected),
            "dup_deliveries": self.dup_deliveries, "dup_effects": self.dup_effects,
            "lost_effects": len(self.lost_effects), "stuck": len(self.stuck),
            "leftover": sum(self.leftover.values()),
        }
        if recovery_ms:
            figs["recovery_p50_ms"] = percentile(recovery_ms, 50)
            figs["recovery_p99_ms"] = percentile(recovery_ms, 99)
        figs.update(extra)
        return figs

    def publish(self, recovery_ms: Sequence[float] = (), **extra: Any) -> str:
        return publish(self.name, self.figures(recovery_ms, **extra))

    def assert_ok(self, *, empty: bool = True, dead_allowed: bool = True) -> None:
        """The safety properties: nothing lost, invented, doubled, or stuck."""
        problems = []
        if self.lost:
            states = {}
            for job_id in self.lost[:10]:
                job = self.jobs.get(job_id)
                states[job_id] = job.state if job else "missing"
            problems.append(f"lost {len(self.lost)}: {states}")
        if self.unexpected:
            problems.append(f"unexpected {len(self.unexpected)}: {self.unexpected[:10]}")
        if self.dup_effects:
            problems.append(f"duplicate guarded effects: {self.dup_effects}")
        if self.lost_effects:
            problems.append(f"completed without effect: {self.lost_effects[:10]}")
        if self.stuck:
            problems.append(f"stuck in processing: {self.stuck[:10]}")
        if empty and any(self.leftover.values()):
            problems.append(f"queues not empty: {self.leftover}")
        if not dead_allowed and self.dead:
            problems.append(f"{self.dead} jobs dead")
        assert not problems, f"{self.name}: " + "; ".join(problems)


async def fetch_jobs(store: Store, queue: str, ids: Iterable[str],
                     chunk: int = 1000) -> dict[str, Job | None]:
    """The stored record of each id (None when the hash is gone), pipelined."""
    ids = list(ids)
    out: dict[str, Job | None] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        async with store.redis.pipeline(transaction=False) as pipe:
            for job_id in part:
                pipe.hgetall(keys.job(queue, job_id))
            rows = await pipe.execute()
        for job_id, raw in zip(part, rows, strict=True):
            out[job_id] = Job.from_hash(raw) if raw else None
    return out


async def leftovers(store: Store, queue: str) -> dict[str, int]:
    """How many ids are still in each non-final structure of the queue."""
    r = store.redis
    counts = {
        "ready": await r.llen(keys.ready(queue)),
        "scheduled": await r.zcard(keys.scheduled(queue)),
        "retry": await r.zcard(keys.retry(queue)),
        "leases": await r.zcard(keys.leases(queue)),
        "processing": 0,
    }
    async for name in r.scan_iter(match=keys.processing_prefix(queue) + "*", count=500):
        counts["processing"] += await r.llen(name)
    return counts


async def settle(store: Store, queue: str, expected: int, timeout: float = 120.0,
                 what: str = "jobs to finish") -> None:
    """Wait until ``expected`` jobs are completed or dead and nothing is left in flight."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await store.queue_stats(queue)
        done = stats.completed + stats.dead
        if done >= expected and not any(
            (stats.queued, stats.scheduled, stats.processing, stats.retrying)
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}: {stats}")
        await asyncio.sleep(0.2)


async def check(store: Store, queue: str, acked: Mapping[str, str | None],
                ledger_path: str | Path | None, *, name: str) -> Report:
    """Compare acknowledged enqueues, the ledger and Redis's final state."""
    data = ledger.read(ledger_path) if ledger_path else ledger.LedgerData()
    jobs = await fetch_jobs(store, queue, acked)
    rep = Report(name=name, acked=len(acked), jobs=jobs, ledger=data)
    now_ms = await store.redis_time_ms()
    lease_ids = {i.decode() for i in await store.redis.zrangebyscore(
        keys.leases(queue), now_ms, "+inf")}
    for job_id, job in jobs.items():
        state = job.state if job else "missing"
        if state not in TERMINAL:
            rep.lost.append(job_id)
        if state == "completed":
            rep.completed += 1
            assert job is not None
            key = job.idempotency_key or f"job:{job_id}"
            if job.type in EFFECT_TYPES and not data.applied.get(key):
                rep.lost_effects.append(job_id)
        elif state == "dead":
            rep.dead += 1
        elif state == "cancelled":
            rep.cancelled += 1
        elif state == "processing" and job_id not in lease_ids:
            rep.stuck.append(job_id)
    known = set(acked)
    finished = {i.decode() for i in await store.redis.zrange(keys.completed(queue), 0, -1)}
    finished |= {i.decode() for i in await store.redis.zrange(keys.dead(queue), 0, -1)}
    rep.unexpected = sorted((set(data.executions) | finished) - known)
    for runs in data.executions.values():
        if len(runs) > 1:
            rep.dup_deliveries += len(runs) - 1
            rep.dup_delivered_jobs += 1
    rep.dup_effects = sum(n - 1 for n in data.applied.values() if n > 1)
    rep.leftover = await leftovers(store, queue)
    return rep
