"""A producer for the cluster and failover tests: POSTs jobs, keeps the acknowledged ids.

Each job carries its own idempotency key, and a request that fails (503, reset) is
retried with the same key, so a retry never makes a second job. ``acked`` holds the
ids the API answered 202 for, or 200 "duplicate" for a retry whose first attempt was
written but not acknowledged (a durable enqueue whose WAIT fell short): the jobs
PhoenixQ promised to keep.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Producer:
    api_url: str
    queues: list[str]
    job: dict = field(default_factory=lambda: {"type": "noop"})
    acked: list[str] = field(default_factory=list)
    refused: int = 0  # answers other than 200/202 (each then retried)
    gaps: list[float] = field(default_factory=list)  # seconds without a 202
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, total: int, concurrency: int = 4) -> None:
        counter = iter(range(total))
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10)
        ) as http:
            await asyncio.gather(*(self._lane(http, counter) for _ in range(concurrency)))

    def stop(self) -> None:
        self._stop.set()

    async def _lane(self, http: aiohttp.ClientSession, counter: object) -> None:
        for n in counter:  # type: ignore[attr-defined]
            if self._stop.is_set():
                return
            queue = self.queues[n % len(self.queues)]
            await self._post(http, {**self.job, "queue": queue,
                                    "idempotencyKey": uuid.uuid4().hex})

    async def _post(self, http: aiohttp.ClientSession, body: dict) -> None:
        since = time.monotonic()
        while not self._stop.is_set():
            try:
                async with http.post(f"{self.api_url}/jobs", json=body) as resp:
                    if resp.status in (200, 202):  # 200: an earlier try was written
                        self.acked.append((await resp.json())["jobId"])
                        if time.monotonic() - since > 0.5:
                            self.gaps.append(time.monotonic() - since)
                        return
                    self.refused += 1
            except (TimeoutError, aiohttp.ClientError):
                self.refused += 1
            await asyncio.sleep(0.05)
