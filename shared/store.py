"""The store: every read and write PhoenixQ makes to Redis, one method per transition.

Services, the API, the CLI and the Python client all go through a ``Store``; none of
them spells a key or runs a command of their own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import keys
from shared.errors import Code, InvalidState, JobNotFound, check
from shared.jobs import CLAIM_FIELDS_ARG, Job, JobSpec
from shared.lua import Scripts
from shared.settings import Settings


class NotReplicated(RedisTimeoutError):
    """Durable enqueue: fewer replicas than required acknowledged the write in time.

    The job is on the master (not rolled back) but may not survive a failover; callers
    answer 503 and the client retries with the same idempotency key.
    """


@dataclass(slots=True, frozen=True)
class EnqueueResult:
    job_id: str
    state: str
    duplicate: bool


@dataclass(slots=True, frozen=True)
class PromoteResult:
    promoted: int
    next_due_ms: int | None
    now_ms: int


@dataclass(slots=True)
class ClaimResult:
    paused: bool = False
    jobs: list[Job] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class FailResult:
    state: str
    delay_ms: int


@dataclass(slots=True, frozen=True)
class RecoverResult:
    alive: bool
    retrying: int = 0
    dead: int = 0
    requeued: int = 0
    found: bool = True  # False: another reaper had already recovered this worker


@dataclass(slots=True, frozen=True)
class QueueStats:
    queue: str
    queued: int
    scheduled: int
    processing: int
    retrying: int
    dead: int
    completed: int
    paused: bool
    oldest_ready_age_ms: int | None

    def to_api(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "counts": {
                "queued": self.queued,
                "scheduled": self.scheduled,
                "processing": self.processing,
                "retrying": self.retrying,
                "dead": self.dead,
                "completed": self.completed,
            },
            "paused": self.paused,
            "oldestReadyAgeMs": self.oldest_ready_age_ms,
        }


def _seed() -> int:
    return random.getrandbits(31)


def _now(now: int | None) -> str:
    return "" if now is None else str(now)


class Store:
    """PhoenixQ's Redis layer. ``client`` is a ``redis.asyncio`` client (or cluster)."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = Scripts(client)
        self._known_queues: set[str] = set()

    # -- enqueue ------------------------------------------------------------------

    async def enqueue(
        self, queue: str, specs: Sequence[JobSpec], now: int | None = None
    ) -> list[EnqueueResult]:
        """Enqueue resolved specs of one queue atomically (see enqueue.lua)."""
        s = self.settings
        await self._register_queue(queue)
        call = {
            "keys": [keys.ready(queue), keys.scheduled(queue), keys.events(queue)],
            "args": [
                keys.job_prefix(queue), keys.idem_prefix(queue), _now(now),
                s.idempotency_ttl_ms, s.events_maxlen, keys.wake_channel(), queue,
                orjson.dumps([spec.to_script() for spec in specs]),
            ],
        }
        if s.durable_enqueue_replicas:
            rows = await self._enqueue_replicated(call)
        else:
            rows = await self.scripts.enqueue(**call)
        return [EnqueueResult(r[0].decode(), r[1].decode(), bool(r[2])) for r in rows]

    async def _enqueue_replicated(self, call: dict[str, Any]) -> list[Any]:
        """The enqueue script then WAIT, on one connection (WAIT covers that client's writes)."""
        s = self.settings
        async with self.redis.pipeline(transaction=False) as pipe:
            await self.scripts.enqueue(**call, client=pipe)
            pipe.execute_command("WAIT", s.durable_enqueue_replicas,
                                 s.durable_enqueue_timeout_ms)
            rows, acked = await pipe.execute()
        if acked < s.durable_enqueue_replicas:
            raise NotReplicated(
                f"{acked} of {s.durable_enqueue_replicas} replicas acknowledged the enqueue "
                f"within {s.durable_enqueue_timeout_ms} ms; retry with the same idempotency key"
            )
        return rows

    async def _register_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            await self.redis.sadd(keys.queues(), queue)
            self._known_queues.add(queue)

    # -- scheduler ----------------------------------------------------------------

    async def promote_due(
        self, queue: str, limit: int | None = None, now: int | None = None
    ) -> PromoteResult:
        promoted, next_due, now_ms = await self.scripts.promote_due(
            keys=[keys.scheduled(queue), keys.retry(queue), keys.ready(queue), keys.events(queue)],
            args=[keys.job_prefix(queue), _now(now), limit or self.settings.promote_batch,
                  self.settings.events_maxlen],
        )
        return PromoteResult(int(promoted), None if next_due < 0 else int(next_due), int(now_ms))

    # -- worker -------------------------------------------------------------------

    async def wait_ready(
        self, queue: str, worker_id: str, timeout_s: float, client: Any
    ) -> str | None:
        """Block until an id is ready and move it to this worker's processing list."""
        moved = await client.blmove(
            keys.ready(queue), keys.processing(queue, worker_id), timeout_s, "RIGHT", "LEFT"
        )
        return moved.decode() if moved is not None else None

    async def claim(
        self, queue: str, worker_id: str, moved: Sequence[str] = (), more: int = 0,
        now: int | None = None,
    ) -> ClaimResult:
        """Lease ``moved`` ids plus up to ``more`` taken from ready now (see claim.lua)."""
        s = self.settings
        status, jobs, skipped = await self.scripts.claim(
            keys=[keys.ready(queue), keys.processing(queue, worker_id), keys.leases(queue),
                  keys.completed(queue), keys.events(queue), keys.paused(queue)],
            args=[keys.job_prefix(queue), keys.done_prefix(queue), worker_id, _now(now), more,
                  s.events_maxlen, s.completed_retention_ms, CLAIM_FIELDS_ARG, *moved],
        )
        return ClaimResult(
            paused=status == b"paused",
            jobs=[Job.from_claim(j) for j in jobs],
            skipped=[i.decode() for i in skipped],
        )

    async def complete(
        self, job: Job, worker_id: str, result: Any = None, now: int | None = None
    ) -> Code:
        """Finish ``job``'s attempt; raises ``StaleLease`` if it is no longer ours."""
        (code,) = await self.complete_many(job.queue, worker_id, [(job, orjson.dumps(result))],
                                           now)
        return check(code)

    async def complete_many(
        self, queue: str, worker_id: str, done: Sequence[tuple[Job, bytes]],
        now: int | None = None,
    ) -> list[int]:
        """Complete many jobs of one queue in one call; one ``Code`` value per job."""
        s = self.settings
        args: list[Any] = [keys.job_prefix(queue), keys.done_prefix(queue), _now(now),
                           s.completed_retention_ms, s.idempotency_ttl_ms, s.events_maxlen]
        for job, result in done:
            args += (job.id, job.token, result, job.idempotency_key or "")
        return await self.scripts.complete(
            keys=[keys.processing(queue, worker_id), keys.leases(queue), keys.completed(queue),
                  keys.events(queue)],
            args=args,
        )

    async def fail(
        self, job: Job, worker_id: str, error: str, permanent: bool = False,
        now: int | None = None,
    ) -> FailResult:
        """End ``job``'s attempt with ``error``: retry with backoff or dead-letter it."""
        q = job.queue
        code, state, delay = await self.scripts.fail(
            keys=[keys.job(q, job.id), keys.processing(q, worker_id), keys.leases(q),
                  keys.retry(q), keys.dead(q), keys.events(q)],
            args=[job.id, job.token, error[:2000], "1" if permanent else "0", _now(now), _seed(),
                  self.settings.events_maxlen, keys.wake_channel(), q],
        )
        check(code)
        return FailResult(state.decode(), int(delay))

    async def extend_lease(self, job: Job, length_ms: int, now: int | None = None) -> int:
        """Push the lease deadline to now + ``length_ms``; returns the deadline (ms)."""
        q = job.queue
        code, deadline = await self.scripts.extend_lease(
            keys=[keys.job(q, job.id), keys.leases(q)],
            args=[job.id, job.token, length_ms, _now(now)],
        )
        check(code)
        return int(deadline)

    async def requeue(self, queue: str, job_id: str, worker_id: str, token: str = "") -> Code:
        """Hand a job back to ready without charging an attempt (token '' = never claimed)."""
        (code,) = await self.scripts.requeue(
            keys=[keys.job(queue, job_id), keys.processing(queue, worker_id), keys.leases(queue),
                  keys.ready(queue), keys.events(queue)],
            args=[job_id, token, self.settings.events_maxlen],
        )
        return Code(code)

    async def heartbeat(self, queue: str, worker_id: str, now: int | None = None) -> int:
        return int(await self.scripts.heartbeat(
            keys=[keys.workers(queue)],
            args=[worker_id, self.settings.worker_ttl_ms, _now(now)],
        ))

    async def processing_ids(self, queue: str, worker_id: str) -> list[str]:
        ids = await self.redis.lrange(keys.processing(queue, worker_id), 0, -1)
        return [i.decode() for i in ids]

    async def deregister_worker(self, queue: str, worker_id: str) -> None:
        await self.redis.zrem(keys.workers(queue), worker_id)

    async def set_worker_info(self, worker_id: str, info: dict[str, Any]) -> None:
        await self.redis.set(
            keys.worker_info(worker_id), orjson.dumps(info), px=self.settings.worker_ttl_ms
        )

    async def delete_worker_info(self, worker_id: str) -> None:
        await self.redis.delete(keys.worker_info(worker_id))

    # -- reaper -------------------------------------------------------------------

    async def expire_leases(self, queue: str, now: int | None = None) -> list[str]:
        """Expire overdue leases (one batch); returns the ids that retried or died."""
        reply = await self.scripts.expire_leases(
            keys=[keys.leases(queue), keys.retry(queue), keys.dead(queue), keys.events(queue)],
            args=[keys.job_prefix(queue), keys.processing_prefix(queue), _now(now),
                  self.settings.reaper_batch, _seed(), self.settings.events_maxlen,
                  keys.wake_channel(), queue],
        )
        return [i.decode() for i in reply[2:]]

    async def dead_workers(self, queue: str, now_ms: int) -> list[str]:
        ids = await self.redis.zrangebyscore(keys.workers(queue), "-inf", now_ms)
        return [i.decode() for i in ids]

    async def recover_worker(
        self, queue: str, worker_id: str, now: int | None = None
    ) -> RecoverResult:
        code, retrying, dead, requeued = await self.scripts.recover_worker(
            keys=[keys.workers(queue), keys.processing(queue, worker_id), keys.leases(queue),
                  keys.ready(queue), keys.retry(queue), keys.dead(queue), keys.events(queue)],
            args=[keys.job_prefix(queue), worker_id, _now(now), _seed(),
                  self.settings.events_maxlen, keys.wake_channel(), queue],
        )
        return RecoverResult(code == Code.ALIVE, retrying, dead, requeued,
                             found=code != Code.NOT_FOUND)

    async def trim_retention(self, queue: str, now: int | None = None) -> tuple[int, int]:
        s = self.settings
        done, dead = await self.scripts.trim_retention(
            keys=[keys.completed(queue), keys.dead(queue)],
            args=[keys.job_prefix(queue), _now(now), s.completed_retention_ms,
                  s.dead_retention_ms, s.dead_max, s.reaper_batch],
        )
        return int(done), int(dead)

    async def redis_time_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- operator actions ---------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, now: int | None = None) -> None:
        code, state = await self.scripts.cancel(
            keys=[keys.job(queue, job_id), keys.ready(queue), keys.scheduled(queue),
                  keys.retry(queue), keys.events(queue)],
            args=[job_id, _now(now), self.settings.events_maxlen,
                  self.settings.completed_retention_ms],
        )
        if code == Code.WRONG_STATE:
            state = state.decode()
            raise InvalidState(state, f"a {state} job cannot be cancelled")
        check(code)

    async def replay_dead(
        self, queue: str, ids: Sequence[str] = (), limit: int = 100, now: int | None = None
    ) -> tuple[list[str], list[str]]:
        """Replay the given dead ids (or the ``limit`` oldest); returns (replayed, skipped)."""
        replayed, skipped = await self.scripts.replay_dead(
            keys=[keys.dead(queue), keys.ready(queue), keys.events(queue)],
            args=[keys.job_prefix(queue), _now(now), self.settings.events_maxlen, limit, *ids],
        )
        return [i.decode() for i in replayed], [i.decode() for i in skipped]

    async def pause(self, queue: str) -> None:
        await self._register_queue(queue)
        await self.redis.set(keys.paused(queue), b"1")

    async def resume(self, queue: str) -> None:
        await self.redis.delete(keys.paused(queue))

    # -- reads --------------------------------------------------------------------

    async def queues(self) -> list[str]:
        return sorted(q.decode() for q in await self.redis.smembers(keys.queues()))

    async def get_job(self, job_id: str, queue: str | None = None) -> Job:
        """The job with this id, searched in ``queue`` or else in every known queue."""
        candidates = [queue] if queue else await self.queues()
        for q in candidates:
            raw = await self.redis.hgetall(keys.job(q, job_id))
            if raw:
                return Job.from_hash(raw)
        raise JobNotFound(f"no job {job_id}")

    async def find_queue(self, job_id: str) -> str:
        return (await self.get_job(job_id)).queue

    async def queue_stats(self, queue: str) -> QueueStats:
        (stats,) = await self.queues_stats([queue])
        return stats

    async def queues_stats(self, queues: Sequence[str]) -> list[QueueStats]:
        """Counts per state of many queues in two pipelined round trips, whatever their
        number (plus one TIME when any queue has a ready job)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(keys.ready(queue))
                for zset in (keys.scheduled, keys.leases, keys.retry, keys.dead,
                             keys.completed):
                    pipe.zcard(zset(queue))
                pipe.exists(keys.paused(queue))
                pipe.lindex(keys.ready(queue), -1)
            flat = await pipe.execute()
        rows = [flat[i:i + 8] for i in range(0, len(flat), 8)]
        ages = await self._oldest_ready_ages(queues, [row[7] for row in rows])
        return [QueueStats(q, *row[:6], bool(row[6]), age)
                for q, row, age in zip(queues, rows, ages, strict=True)]

    async def _oldest_ready_ages(
        self, queues: Sequence[str], oldest: Sequence[bytes | None]
    ) -> list[int | None]:
        waiting = [(i, q, o) for i, (q, o) in enumerate(zip(queues, oldest, strict=True)) if o]
        ages: list[int | None] = [None] * len(queues)
        if not waiting:
            return ages
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, queue, job_id in waiting:
                pipe.hget(keys.job(queue, job_id.decode()), "available_at")
            available = await pipe.execute()
        now = await self.redis_time_ms()  # TIME has no key: a cluster pipeline can't carry it
        for (i, _, _), value in zip(waiting, available, strict=True):
            if value is not None:
                ages[i] = max(0, now - int(value))
        return ages

    async def dead_jobs(
        self, queue: str, cursor: int = 0, limit: int = 50
    ) -> tuple[list[Job], int | None]:
        """A page of the DLQ, newest first; returns the jobs and the next cursor."""
        ids = await self.redis.zrevrange(keys.dead(queue), cursor, cursor + limit - 1)
        jobs = []
        for i in ids:
            raw = await self.redis.hgetall(keys.job(queue, i.decode()))
            if raw:
                jobs.append(Job.from_hash(raw))
        next_cursor = cursor + limit if len(ids) == limit else None
        return jobs, next_cursor

    async def worker_infos(self) -> list[dict[str, Any]]:
        """Every live worker's info (``phx:worker:<id>``: host, pid, queues, running jobs)."""
        names = [k async for k in self.redis.scan_iter(match=keys.worker_info_pattern(),
                                                       count=500)]
        if not names:
            return []
        # the info keys are untagged, so on a cluster they span slots: MGET per slot
        mget = getattr(self.redis, "mget_nonatomic", self.redis.mget)
        values = await mget(names)
        infos = [orjson.loads(v) for v in values if v is not None]
        return sorted(infos, key=lambda info: str(info.get("id", "")))

    # -- operator actions (API) ---------------------------------------------------

    async def purge_dead(self, queue: str, limit: int = 500) -> tuple[int, int]:
        """Delete up to ``limit`` dead jobs for good (see purge_dead.lua).

        Returns (purged, remaining); call again while ``remaining`` is positive.
        """
        purged, remaining = await self.scripts.purge_dead(
            keys=[keys.dead(queue), keys.events(queue)],
            args=[keys.job_prefix(queue), limit, self.settings.events_maxlen],
        )
        return int(purged), int(remaining)
