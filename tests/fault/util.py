"""Helpers of the fault suite: fast enqueue, starting services off the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shared import keys
from shared.jobs import JobSpec
from shared.store import Store
from tests.harness.services import ServiceProcess, Topology
from tests.harness.wait import async_wait_until

BATCH = 500


async def enqueue(store: Store, queue: str, specs: Iterable[JobSpec],
                  batch: int = BATCH) -> dict[str, str | None]:
    """Enqueue ``specs`` in batches (one Lua call each); returns the acknowledged
    job id -> idempotency key. A batch counts as acknowledged only once its call returned.
    """
    acked: dict[str, str | None] = {}
    pending: list[JobSpec] = []

    async def flush() -> None:
        results = await store.enqueue(queue, pending)
        for spec, res in zip(pending, results, strict=True):
            acked[res.job_id] = spec.idempotency_key
        pending.clear()

    for spec in specs:
        pending.append(spec.resolved(store.settings))
        if len(pending) >= batch:
            await flush()
    if pending:
        await flush()
    return acked


def effect_specs(queue: str, count: int, job_type: str = "ledger.effect", *,
                 prefix: str = "k", payload: Any = None, **fields: Any) -> list[JobSpec]:
    """``count`` jobs of ``job_type``, each with its own idempotency key ``<prefix>-<n>``."""
    return [JobSpec(type=job_type, queue=queue, payload=payload,
                    idempotency_key=f"{prefix}-{n}", **fields) for n in range(count)]


async def start(topology: Topology, name: str, **env: str) -> ServiceProcess:
    """``topology.start`` in a thread, so pollers on the event loop keep running."""
    return await asyncio.to_thread(topology.start, name, **env)


def worker_id(proc: ServiceProcess) -> str:
    """The id a worker process logged when it started."""
    return str(proc.events("Worker starting")[0]["worker_id"])


def is_stopped(pid: int) -> bool:
    """True while the process is stopped (state T in /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def in_sleep_syscall(pid: int) -> bool:
    """True when the main thread is blocked in (clock_)nanosleep — a hung failpoint —
    rather than in the event loop's epoll_wait."""
    try:
        with open(f"/proc/{pid}/syscall") as fh:
            nr = fh.read().split()[0]
    except (OSError, IndexError):
        return False
    return nr in ("35", "230")  # x86-64: nanosleep, clock_nanosleep


async def job_states(store: Store, queue: str, ids: Sequence[str]) -> list[tuple[str, str]]:
    """(state, worker) of each id, in one pipeline."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(queue, job_id), "state", "worker")
        rows = await pipe.execute()
    return [((s or b"").decode(), (w or b"").decode()) for s, w in rows]


async def events_of(store: Store, queue: str) -> list[dict[str, str]]:
    """Every entry of the queue's events stream, decoded, oldest first."""
    out: list[dict[str, str]] = []
    last = "-"
    while True:
        rows = await store.redis.xrange(keys.events(queue), min=last, count=10_000)
        if last != "-":
            rows = rows[1:]
        if not rows:
            return out
        for _id, fields in rows:
            out.append({k.decode(): v.decode() for k, v in fields.items()})
        last = rows[-1][0].decode()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Supervisor:
    """Keeps ``count`` processes of one service running, like a process manager would.

    ``step()`` restarts whatever died and counts why: exit code 137 is a failpoint's
    ``os._exit(137)`` (``exits``); with ``detect_hangs`` a process whose main thread sits
    in a sleep syscall (a ``hang`` failpoint) on two looks is SIGKILLed and restarted
    (``hangs``). Any other exit code is kept in ``other_exits`` (a test should fail on it).
    """

    def __init__(self, topology: Topology, name: str, count: int, *,
                 detect_hangs: bool = False, **env: str) -> None:
        self.topology, self.name, self.count, self.env = topology, name, count, env
        self.detect_hangs = detect_hangs
        self.procs: list[ServiceProcess] = []
        self.exits = 0
        self.hangs = 0
        self.other_exits: list[int] = []
        self._suspect: set[int] = set()
        self.started: list[ServiceProcess] = []  # every process ever started, for its logs

    @property
    def hits(self) -> int:
        return self.exits + self.hangs

    def _spawn(self) -> ServiceProcess:
        # Not ``topology.start``: a process may freeze before its ready line is flushed
        # (log lines are written once per event-loop turn), so nothing waits for it here.
        proc = ServiceProcess(self.name, {**self.topology.env, **self.env}).start()
        self.topology.procs.append(proc)
        self.started.append(proc)
        return proc

    async def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]

    async def step(self) -> None:
        replace: list[ServiceProcess] = []
        for proc in self.procs:
            if not proc.alive():
                code = proc.proc.returncode if proc.proc is not None else None
                if code == 137:
                    self.exits += 1
                else:
                    self.other_exits.append(code if code is not None else -1)
                proc.close()
                replace.append(proc)
            elif self.detect_hangs and in_sleep_syscall(proc.pid):
                if proc.pid in self._suspect:
                    proc.kill()
                    proc.close()
                    self.hangs += 1
                    replace.append(proc)
                else:
                    self._suspect.add(proc.pid)
            else:
                self._suspect.discard(proc.pid)
        if replace:
            for proc in replace:
                self.procs.remove(proc)
            self.procs += [self._spawn() for _ in replace]

    def kill_all(self) -> None:
        """SIGKILL every supervised process (and stop supervising)."""
        for proc in self.procs:
            proc.kill()
            proc.close()
        self.procs = []


async def wait_for(cond: Callable[[], Any], timeout: float, what: str,
                   interval: float = 0.05) -> Any:
    """Poll a plain (non-async) condition without blocking the event loop."""
    return await async_wait_until(cond, timeout, interval, what)
