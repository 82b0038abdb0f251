"""Enqueue from Python, straight to Redis: ``phoenixq.Client`` and ``phoenixq.SyncClient``.

The client goes through the same ``Store`` as the HTTP API and validates with the same
``JobSpec.resolved``, so a job enqueued here is indistinguishable from one POSTed to
``/jobs``::

    async with phoenixq.Client("redis://localhost:6380/0") as client:
        queued = await client.enqueue("email.send", {"to": "a@b.c"}, delay_ms=5000)
        print(queued.job_id, queued.status)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from shared.connection import connect
from shared.jobs import Job, JobSpec
from shared.settings import Settings
from shared.store import Store


@dataclass(slots=True, frozen=True)
class Enqueued:
    """The answer to an enqueue: the job's id, its status, and whether it was a duplicate.

    ``status`` is ``queued`` or ``scheduled``; for a duplicate idempotency key it is the
    first job's current status and ``job_id`` is the first job's id.
    """

    job_id: str
    status: str
    duplicate: bool = False


class Client:
    """Async PhoenixQ client.

    Args:
        redis_url: Redis to use; default ``REDIS_URL`` from the environment.
        settings: full settings (defaults for attempts, timeouts, backoff); default
            ``Settings.from_env()``.
        redis: an existing ``redis.asyncio`` client to share; the caller closes it.
    """

    def __init__(
        self, redis_url: str | None = None, *, settings: Settings | None = None,
        redis: Any = None,
    ) -> None:
        if settings is None:
            overrides = {"redis_url": redis_url} if redis_url else {}
            settings = Settings.from_env(**overrides)
        self.settings = settings
        self._owns_redis = redis is None
        self.store = Store(redis if redis is not None else connect(settings), settings)

    async def enqueue(
        self, type: str, payload: Any = None, *, queue: str = "default", delay_ms: int = 0,
        run_at_ms: int = 0, max_attempts: int | None = None, timeout_ms: int | None = None,
        visibility_timeout_ms: int | None = None, backoff_base_ms: int | None = None,
        backoff_cap_ms: int | None = None, idempotency_key: str | None = None,
    ) -> Enqueued:
        """Enqueue one job; raises ``ValidationError`` like the API's 400."""
        spec = JobSpec(
            type=type, payload=payload, queue=queue, delay_ms=delay_ms, run_at_ms=run_at_ms,
            max_attempts=max_attempts, timeout_ms=timeout_ms,
            visibility_timeout_ms=visibility_timeout_ms, backoff_base_ms=backoff_base_ms,
            backoff_cap_ms=backoff_cap_ms, idempotency_key=idempotency_key,
        )
        (result,) = await self.enqueue_many([spec])
        return result

    async def enqueue_many(self, specs: Iterable[JobSpec]) -> list[Enqueued]:
        """Enqueue several jobs; each queue's jobs go in one atomic script call.

        All specs are validated before anything is written. Results keep the input order.
        """
        resolved = [spec.resolved(self.settings) for spec in specs]
        by_queue: dict[str, list[int]] = {}
        for index, spec in enumerate(resolved):
            by_queue.setdefault(spec.queue, []).append(index)
        results: list[Enqueued | None] = [None] * len(resolved)
        for queue, indexes in by_queue.items():
            rows = await self.store.enqueue(queue, [resolved[i] for i in indexes])
            for index, row in zip(indexes, rows, strict=True):
                results[index] = Enqueued(row.job_id, row.state, row.duplicate)
        return [r for r in results if r is not None]

    async def get_job(self, job_id: str, queue: str | None = None) -> Job:
        """The job with this id; raises ``JobNotFound``."""
        return await self.store.get_job(job_id, queue)

    async def close(self) -> None:
        if self._owns_redis:
            await self.store.redis.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SyncClient:
    """Blocking wrapper of ``Client`` for scripts; runs its own event loop.

    Not for use inside a running event loop (use ``Client`` there).
    """

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        self._runner = asyncio.Runner()
        self._client = self._runner.run(self._make(redis_url, settings))

    @staticmethod
    async def _make(redis_url: str | None, settings: Settings | None) -> Client:
        return Client(redis_url, settings=settings)

    @property
    def settings(self) -> Settings:
        return self._client.settings

    def enqueue(self, type: str, payload: Any = None, **options: Any) -> Enqueued:
        """Same arguments as ``Client.enqueue``."""
        return self._runner.run(self._client.enqueue(type, payload, **options))

    def enqueue_many(self, specs: Iterable[JobSpec]) -> list[Enqueued]:
        return self._runner.run(self._client.enqueue_many(list(specs)))

    def get_job(self, job_id: str, queue: str | None = None) -> Job:
        return self._runner.run(self._client.get_job(job_id, queue))

    def close(self) -> None:
        if self._client is not None:
            self._runner.run(self._client.close())
            self._runner.close()
            self._client = None  # type: ignore[assignment]

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
