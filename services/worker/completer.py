"""Group commit for completions: jobs finishing together share one round trip.

Every job awaits its own outcome, but completions that arrive while a batch is in
flight (or in the same event-loop iteration) are sent together as one `complete`
script call per queue. Under load this turns N round trips into one; when idle, a
lone completion goes out at once.
"""

from __future__ import annotations

import asyncio

import orjson

from shared.errors import Code, check
from shared.jobs import Job
from shared.store import Store


class Completer:
    def __init__(self, store: Store, worker_id: str) -> None:
        self.store = store
        self.worker_id = worker_id
        self._pending: dict[str, list[tuple[Job, bytes, asyncio.Future[int]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def complete(self, job: Job, result: object) -> Code:
        """Complete ``job``; raises ``StaleLease``/``JobNotFound`` like ``Store.complete``.

        Raises ``TypeError`` at once if ``result`` is not JSON-serialisable.
        """
        payload = orjson.dumps(result)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(job.queue, []).append((job, payload, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return check(await future)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let completions of this loop iteration join the batch
        while self._pending:
            batch, self._pending = self._pending, {}
            for queue, items in batch.items():
                await self._send(queue, items)

    async def _send(self, queue: str, items: list[tuple[Job, bytes, asyncio.Future[int]]]) -> None:
        try:
            codes = await self.store.complete_many(
                queue, self.worker_id, [(job, payload) for job, payload, _ in items]
            )
        except Exception as exc:  # every waiter sees the failure and retries on its own
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), code in zip(items, codes, strict=True):
            if not future.done():
                future.set_result(int(code))
