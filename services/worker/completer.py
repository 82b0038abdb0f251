"""Completions share round trips: one `complete` script call per batch of finished jobs."""

from __future__ import annotations

import orjson

from shared.batching import GroupCommit
from shared.errors import Code, check
from shared.jobs import Job
from shared.store import Store


class Completer:
    def __init__(self, store: Store, worker_id: str) -> None:
        self._batch: GroupCommit[str, tuple[Job, bytes], int] = GroupCommit(
            lambda queue, done: store.complete_many(queue, worker_id, done)
        )

    async def complete(self, job: Job, result: object) -> Code:
        """Complete ``job``; raises ``StaleLease``/``JobNotFound`` like ``Store.complete``.

        Raises ``TypeError`` at once if ``result`` is not JSON-serialisable.
        """
        return check(await self._batch.submit(job.queue, (job, orjson.dumps(result))))
