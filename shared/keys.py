"""Every Redis key PhoenixQ uses, one function per key, and nothing else spells one.

All keys of one queue share the hash tag ``{<queue>}`` so that every Lua transition
touches a single Redis Cluster slot. Cross-queue registries (``phx:queues`` and the
worker info keys) live outside any tag and are only written outside scripts.
"""

from __future__ import annotations

import re

ROOT = "phx"

#: Queue and job-type names: letters, digits and ``._:-``; no braces, globs or spaces,
#: so a user-supplied name can never address another key or form a glob pattern.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
NAME_RE = re.compile(NAME_PATTERN)


def queue_prefix(queue: str) -> str:
    """``phx:{queue}:`` — the tagged prefix every per-queue key starts with."""
    return f"{ROOT}:{{{queue}}}:"


def job(queue: str, job_id: str) -> str:
    """Hash holding one job's record."""
    return f"{queue_prefix(queue)}job:{job_id}"


def job_prefix(queue: str) -> str:
    """Prefix of job hashes, passed to scripts that handle ids in bulk."""
    return f"{queue_prefix(queue)}job:"


def ready(queue: str) -> str:
    """List of ids ready to run (LPUSH in, BLMOVE/LMOVE out from the right)."""
    return f"{queue_prefix(queue)}ready"


def scheduled(queue: str) -> str:
    """Sorted set id -> due time (ms) of delayed jobs."""
    return f"{queue_prefix(queue)}scheduled"


def retry(queue: str) -> str:
    """Sorted set id -> due time (ms) of failed jobs waiting out their backoff."""
    return f"{queue_prefix(queue)}retry"


def processing(queue: str, worker_id: str) -> str:
    """List of ids a worker moved out of ``ready`` (one list per worker)."""
    return f"{processing_prefix(queue)}{worker_id}"


def processing_prefix(queue: str) -> str:
    """Prefix of the per-worker processing lists, passed to bulk scripts."""
    return f"{queue_prefix(queue)}processing:"


def leases(queue: str) -> str:
    """Sorted set id -> lease deadline (ms) of claimed jobs."""
    return f"{queue_prefix(queue)}leases"


def dead(queue: str) -> str:
    """Sorted set id -> time of death (ms): the dead-letter queue."""
    return f"{queue_prefix(queue)}dead"


def completed(queue: str) -> str:
    """Sorted set id -> completion time (ms), for retention."""
    return f"{queue_prefix(queue)}completed"


def idem(queue: str, key: str) -> str:
    """String: enqueue-side dedup, idempotency key -> first job id, with a TTL."""
    return f"{idem_prefix(queue)}{key}"


def idem_prefix(queue: str) -> str:
    return f"{queue_prefix(queue)}idem:"


def done(queue: str, key: str) -> str:
    """String: execution mark, set only by the completing transition."""
    return f"{done_prefix(queue)}{key}"


def done_prefix(queue: str) -> str:
    return f"{queue_prefix(queue)}done:"


def events(queue: str) -> str:
    """Stream of lifecycle events, capped with MAXLEN ~."""
    return f"{queue_prefix(queue)}events"


def workers(queue: str) -> str:
    """Sorted set worker id -> liveness deadline (ms) of workers serving the queue."""
    return f"{queue_prefix(queue)}workers"


def paused(queue: str) -> str:
    """String flag: present while the queue is paused."""
    return f"{queue_prefix(queue)}paused"


def queues() -> str:
    """Set of every queue name ever enqueued to (outside any hash tag)."""
    return f"{ROOT}:queues"


def worker_info(worker_id: str) -> str:
    """String (JSON, with a TTL): a live worker's host, pid, queues and concurrency."""
    return f"{ROOT}:worker:{worker_id}"


def worker_info_pattern() -> str:
    """SCAN pattern matching every worker info key."""
    return f"{ROOT}:worker:*"


def wake_channel() -> str:
    """Pub/sub channel: a queue name is published when a job becomes due sooner."""
    return f"{ROOT}:wake"
