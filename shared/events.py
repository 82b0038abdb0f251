"""Reading a queue's lifecycle event stream (``phx:{q}:events``), for the API and the CLI.

Every transition script appends one entry (``job``, ``event``, ``attempt`` and extra
fields such as ``error`` or ``delay_ms``); the stream is capped with ``MAXLEN ~``, so
history reaches back only so far. Entry ids are Redis stream ids (``<ms>-<seq>``): they
order the events and a reader resumes after the last id it saw.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import keys

ENTRY_ID_RE = re.compile(r"\d{1,20}-\d{1,20}")
#: States after which a job sends no more events unless replayed.
FINAL_EVENTS = frozenset({"completed", "dead", "cancelled", "purged"})
BLOCK_MS = 1000
COUNT = 500


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    queue: str
    job_id: str
    event: str
    attempt: int
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def at_ms(self) -> int:
        """When Redis appended the entry (the first half of its id)."""
        return int(self.id.split("-", 1)[0])

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "queue": self.queue, "jobId": self.job_id, "event": self.event,
                "attempt": self.attempt, "at": self.at_ms, **self.extra}


def describe(event: Event) -> str:
    """One line for people: time, entry id, job, event, attempt, extra fields."""
    at = datetime.fromtimestamp(event.at_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    extra = " ".join(f"{k}={v}" for k, v in event.extra.items())
    return f"{at}  {event.id}  {event.job_id}  {event.event:<10}  attempt={event.attempt}  " \
           f"{extra}".rstrip()


def _decode(queue: str, entry_id: bytes | str, raw: dict[Any, Any]) -> Event:
    fields = {_s(k): _s(v) for k, v in raw.items()}
    job_id = fields.pop("job", "")
    name = fields.pop("event", "")
    attempt = int(fields.pop("attempt", "0") or 0)
    return Event(_s(entry_id), queue, job_id, name, attempt, fields)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def valid_id(entry_id: str) -> bool:
    return bool(ENTRY_ID_RE.fullmatch(entry_id))


async def last_id(client: Any, queue: str) -> str:
    """The id of the newest entry, or ``0-0``: follow from here to see only new events."""
    newest = await client.xrevrange(keys.events(queue), count=1)
    return _s(newest[0][0]) if newest else "0-0"


async def read(client: Any, queue: str, after: str, block_ms: int | None = None,
               count: int = COUNT) -> list[Event]:
    """Entries after ``after`` (exclusive), waiting up to ``block_ms`` when there are none."""
    reply = await client.xread({keys.events(queue): after}, count=count, block=block_ms)
    if not reply:
        return []
    entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
    return [_decode(queue, entry_id, raw) for entry_id, raw in entries]


async def follow(client: Any, queue: str, after: str = "0-0", job_id: str | None = None,
                 follow: bool = True, block_ms: int = BLOCK_MS) -> AsyncIterator[Event]:
    """Events after ``after`` (of one job if given); with ``follow``, then wait for more.

    ``client`` should be a dedicated connection: ``XREAD BLOCK`` holds it while waiting.
    """
    while True:
        batch = await read(client, queue, after, block_ms if follow else None)
        for event in batch:
            after = event.id
            if job_id is None or event.job_id == job_id:
                yield event
        if not batch and not follow:
            return
