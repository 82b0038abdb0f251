"""Reconciliation: which acknowledged jobs are (still) in Redis, and in which state.

After a Redis host crash, an operator (or a test) holds the ids the API acknowledged
with 202 — from client logs, the API's request log, an outbox. ``reconcile`` looks each
one up and reports exactly the ones that are gone, plus the state counts of the rest,
so that lost enqueues can be re-sent instead of guessed at.

A missing id is either lost (the fsync policy allowed it: see docs/guarantees.md) or
forgotten on purpose because its retention ran out (completed, cancelled and dead jobs
are trimmed); run it soon after the incident, within the completed-job retention.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import keys
from shared.store import Store

BATCH = 1000


@dataclass(slots=True)
class ReconcileReport:
    """Acknowledged ids checked, the ones missing, and how many are in each state."""

    acknowledged: int
    missing: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)
    found_in: dict[str, int] = field(default_factory=dict)

    @property
    def found(self) -> int:
        return self.acknowledged - len(self.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "found": self.found,
            "missingCount": len(self.missing),
            "missing": self.missing,
            "states": self.states,
            "queues": self.queues,
            "foundIn": self.found_in,
        }


def read_ids(lines: Iterable[str]) -> list[str]:
    """Job ids, one per line; blank lines and ``#`` comments skipped, duplicates dropped."""
    seen: dict[str, None] = {}
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            seen.setdefault(text.split()[0], None)
    return list(seen)


async def reconcile(store: Store, ids: Sequence[str], queue: str | None = None) -> ReconcileReport:
    """Look up every id in ``queue`` (or in every known queue); report the missing ones."""
    queues = [queue] if queue else await store.queues()
    remaining = list(dict.fromkeys(ids))
    report = ReconcileReport(acknowledged=len(remaining), queues=queues)
    states: Counter[str] = Counter()
    for q in queues:
        if not remaining:
            break
        still: list[str] = []
        for start in range(0, len(remaining), BATCH):
            chunk = remaining[start:start + BATCH]
            async with store.redis.pipeline(transaction=False) as pipe:
                for job_id in chunk:
                    pipe.hget(keys.job(q, job_id), "state")
                replies = await pipe.execute()
            for job_id, state in zip(chunk, replies, strict=True):
                if state is None:
                    still.append(job_id)
                else:
                    states[state.decode()] += 1
                    report.found_in[q] = report.found_in.get(q, 0) + 1
        remaining = still
    report.missing = remaining
    report.states = dict(sorted(states.items()))
    return report


def format_report(report: ReconcileReport) -> str:
    """The human-readable report ``phoenixq reconcile`` prints."""
    lines = [
        f"acknowledged: {report.acknowledged}",
        f"found:        {report.found}",
        f"missing:      {len(report.missing)}",
    ]
    if report.states:
        lines.append("states:       " + ", ".join(f"{k}={v}" for k, v in report.states.items()))
    if report.missing:
        lines.append("missing ids (lost, or past their retention):")
        lines.extend(f"  {job_id}" for job_id in report.missing)
    return "\n".join(lines)
