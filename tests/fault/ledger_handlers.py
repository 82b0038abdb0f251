"""Ledger handlers for the fault suite: every execution and every applied effect, on disk.

Workers load this module with ``PHOENIXQ_HANDLERS=tests.fault.ledger_handlers`` and write
to the SQLite file named by ``PHOENIXQ_LEDGER`` (WAL mode, one connection per process,
one short transaction per step). The test process reads the same file with ``read()``.

Handler types (``payload`` is a dict or null; ``seconds`` is optional everywhere):

* ``ledger.effect``  sleep ``seconds`` (default 0), then apply the effect.
* ``ledger.sleep``   sleep ``seconds`` (default 1), then apply the effect.
* ``ledger.raise``   always raise ``RuntimeError`` (a poison job that fails).
* ``ledger.crash``   ``os._exit(137)``: kill its own worker process (a poison job that kills).
* ``ledger.freeze``  on its first attempt: wait until ``group`` handlers of this process
  are waiting, then the last one SIGSTOPs its own process; after SIGCONT every one
  applies its effect. This makes a zombie whose handlers are all done and whose effects
  and completions are all late. On later attempts it just applies its effect.

The effect, the Stripe way: inside one transaction, ``INSERT OR IGNORE`` into ``guard``
keyed by the job's idempotency key (the job id when it has none); only when that row is
new is the effect *applied* (a row in ``applied``). Every arrival at the effect point is
also counted, unguarded, in ``raw`` — so duplicate raw executions stay visible.

Tables: ``executions`` (one row per handler start: job id, type, lease token, attempt,
worker pid, start/end time, outcome), ``guard``, ``applied``, ``raw``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phoenixq

ENV = "PHOENIXQ_LEDGER"

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    n INTEGER PRIMARY KEY, job_id TEXT NOT NULL, type TEXT NOT NULL, token TEXT NOT NULL,
    attempt INTEGER NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL,
    ended REAL, outcome TEXT
);
CREATE INDEX IF NOT EXISTS executions_job ON executions (job_id);
CREATE TABLE IF NOT EXISTS guard (
    key TEXT PRIMARY KEY, job_id TEXT NOT NULL, token TEXT NOT NULL, pid INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    n INTEGER PRIMARY KEY, key TEXT NOT NULL, job_id TEXT NOT NULL, token TEXT NOT NULL,
    pid INTEGER NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS raw (
    n INTEGER PRIMARY KEY, key TEXT NOT NULL, job_id TEXT NOT NULL, token TEXT NOT NULL,
    pid INTEGER NOT NULL, at REAL NOT NULL
);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode that waits (up to 60 s) for other writers."""
    conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def init(path: str | Path) -> Path:
    """Create the ledger file and its tables (the test does this before starting workers)."""
    conn = connect(path)
    conn.executescript(SCHEMA)
    conn.close()
    return Path(path)


# -- the worker side ------------------------------------------------------------------

_conn: sqlite3.Connection | None = None
_conn_pid = 0


def _db() -> sqlite3.Connection:
    global _conn, _conn_pid
    if _conn is None or _conn_pid != os.getpid():
        path = os.environ.get(ENV)
        if not path:
            raise RuntimeError(f"{ENV} is not set: the ledger handlers need a ledger file")
        _conn = connect(path)
        _conn.executescript(SCHEMA)
        _conn_pid = os.getpid()
    return _conn


def _start(job: phoenixq.Job) -> int:
    cur = _db().execute(
        "INSERT INTO executions (job_id, type, token, attempt, pid, started) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (job.id, job.type, job.token, job.attempt, os.getpid(), time.time()),
    )
    return int(cur.lastrowid or 0)


def _end(n: int, outcome: str) -> None:
    _db().execute("UPDATE executions SET ended = ?, outcome = ? WHERE n = ?",
                  (time.time(), outcome, n))


def effect_key(job: phoenixq.Job) -> str:
    return job.idempotency_key or f"job:{job.id}"


def _apply(job: phoenixq.Job, n: int) -> bool:
    """Apply the job's effect at most once per key; True if this call applied it."""
    db, key, pid, now = _db(), effect_key(job), os.getpid(), time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT INTO raw (key, job_id, token, pid, at) VALUES (?, ?, ?, ?, ?)",
                   (key, job.id, job.token, pid, now))
        cur = db.execute(
            "INSERT OR IGNORE INTO guard (key, job_id, token, pid, at) VALUES (?, ?, ?, ?, ?)",
            (key, job.id, job.token, pid, now))
        applied = cur.rowcount == 1
        if applied:
            db.execute(
                "INSERT INTO applied (key, job_id, token, pid, at) VALUES (?, ?, ?, ?, ?)",
                (key, job.id, job.token, pid, now))
        db.execute("UPDATE executions SET ended = ?, outcome = ? WHERE n = ?",
                   (now, "applied" if applied else "ignored", n))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return applied


def _seconds(job: phoenixq.Job, default: float) -> float:
    payload = job.payload if isinstance(job.payload, dict) else {}
    return float(payload.get("seconds", default))


async def _effect_after(job: phoenixq.Job, seconds: float) -> dict[str, Any]:
    n = _start(job)
    try:
        if seconds > 0:
            await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _end(n, "cancelled")
        raise
    return {"applied": _apply(job, n), "pid": os.getpid()}


@phoenixq.handler("ledger.effect")
async def effect(job: phoenixq.Job) -> dict[str, Any]:
    return await _effect_after(job, _seconds(job, 0.0))


@phoenixq.handler("ledger.sleep")
async def sleep(job: phoenixq.Job) -> dict[str, Any]:
    return await _effect_after(job, _seconds(job, 1.0))


@phoenixq.handler("ledger.raise")
async def raise_always(job: phoenixq.Job) -> None:
    n = _start(job)
    _end(n, "raised")
    raise RuntimeError("ledger.raise: this poison job always fails")


@phoenixq.handler("ledger.crash")
async def crash(job: phoenixq.Job) -> None:
    _start(job)
    os._exit(137)


_frozen_waiting = 0
_thawed = asyncio.Event()


@phoenixq.handler("ledger.freeze")
async def freeze(job: phoenixq.Job) -> dict[str, Any]:
    global _frozen_waiting
    payload = job.payload if isinstance(job.payload, dict) else {}
    group = int(payload.get("group", 1))
    n = _start(job)
    if job.attempt > 1:
        return {"applied": _apply(job, n), "pid": os.getpid()}
    _frozen_waiting += 1
    if _frozen_waiting >= group:
        _frozen_waiting = 0
        os.kill(os.getpid(), signal.SIGSTOP)  # the whole process stops here until SIGCONT
        _thawed.set()
    else:
        await _thawed.wait()
    return {"applied": _apply(job, n), "pid": os.getpid()}


# -- the test side --------------------------------------------------------------------


@dataclass(slots=True)
class Execution:
    job_id: str
    type: str
    token: str
    attempt: int
    pid: int
    started: float
    ended: float | None
    outcome: str | None


@dataclass(slots=True)
class LedgerData:
    """A snapshot of the ledger: executions per job, applied and raw effects per key."""

    executions: dict[str, list[Execution]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)       # key -> effects applied
    applied_by: dict[str, list[str]] = field(default_factory=dict)  # key -> job ids
    raw: dict[str, int] = field(default_factory=dict)           # key -> arrivals at effect

    def runs(self, job_id: str) -> list[Execution]:
        return self.executions.get(job_id, [])


def read(path: str | Path) -> LedgerData:
    """Read the whole ledger (safe while workers are still writing: WAL readers)."""
    conn = connect(path)
    try:
        data = LedgerData()
        for row in conn.execute(
            "SELECT job_id, type, token, attempt, pid, started, ended, outcome "
            "FROM executions ORDER BY n"
        ):
            data.executions.setdefault(row[0], []).append(Execution(*row))
        for key, job_id in conn.execute("SELECT key, job_id FROM applied ORDER BY n"):
            data.applied[key] = data.applied.get(key, 0) + 1
            data.applied_by.setdefault(key, []).append(job_id)
        for key, count in conn.execute("SELECT key, COUNT(*) FROM raw GROUP BY key"):
            data.raw[key] = count
        return data
    finally:
        conn.close()
