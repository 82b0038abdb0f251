"""The demo handlers, used when ``PHOENIXQ_HANDLERS`` names nothing else.

``email.send`` replays the seed's log story: the first attempt fails, the retry
succeeds. ``noop`` does nothing; ``fail.always`` always fails; ``fail.permanent``
dead-letters at once; ``sleep`` sleeps ``payload.seconds``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import phoenixq


@phoenixq.handler("email.send")
async def send_email(job: phoenixq.Job) -> dict[str, Any]:
    if job.attempt == 1:
        raise RuntimeError("SMTP server busy (demo: the first attempt always fails)")
    to = (job.payload or {}).get("to") if isinstance(job.payload, dict) else None
    return {"delivered": True, "to": to}


@phoenixq.handler("noop")
async def noop(job: phoenixq.Job) -> None:
    return None


@phoenixq.handler("fail.always")
async def fail_always(job: phoenixq.Job) -> None:
    raise RuntimeError("this job always fails")


@phoenixq.handler("fail.permanent")
async def fail_permanent(job: phoenixq.Job) -> None:
    raise phoenixq.PermanentError("this job can never succeed")


@phoenixq.handler("sleep")
async def sleep(job: phoenixq.Job) -> dict[str, float]:
    seconds = float((job.payload or {}).get("seconds", 1))
    await asyncio.sleep(seconds)
    return {"slept": seconds}
