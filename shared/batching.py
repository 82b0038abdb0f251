"""Group commit: calls that arrive together share one Redis round trip.

Callers ``submit(key, item)`` and await their own result. Items submitted in the same
event-loop turn, or while a flush for them is in flight, are flushed together: one
``flush(key, items)`` call per key, which returns one result per item, in order. When
traffic is light a lone item goes out at once; under load N round trips become one.
A failed flush fails every item of that flush, and each caller decides what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[K, T, R]):
    def __init__(
        self, flush: Callable[[K, list[T]], Awaitable[Sequence[R]]], max_batch: int = 500
    ) -> None:
        self._flush_fn = flush
        self._max_batch = max_batch
        self._pending: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, key: K, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the items of this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending, {}
            for key, entries in batch.items():
                for start in range(0, len(entries), self._max_batch):
                    await self._send(key, entries[start:start + self._max_batch])

    async def _send(self, key: K, entries: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, fut) for item, fut in entries if not fut.done()]  # callers gone
        if not live:
            return
        try:
            results = await self._flush_fn(key, [item for item, _ in live])
        except Exception as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)
