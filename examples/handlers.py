"""Example handlers: a module of your own, loaded by workers through PHOENIXQ_HANDLERS.

Run it with the demo handlers still available::

    PHOENIXQ_HANDLERS=phoenixq.demo,examples.handlers make up
    phoenixq enqueue webhook.deliver --idempotency-key order-42-paid \\
        --payload '{"url": "https://example.com/hooks", "body": {"order": 42}}'

A handler is an ``async def`` taking the ``Job``; what it returns is stored as the job's
result. Raising retries the job with backoff; ``PermanentError`` sends it to the DLQ
at once. Execution is at-least-once: use ``job.idempotency_key`` to make outside
effects safe to repeat.
"""

from __future__ import annotations

from typing import Any

import aiohttp

import phoenixq


@phoenixq.handler("webhook.deliver")
async def deliver_webhook(job: phoenixq.Job) -> dict[str, Any]:
    """POST ``payload.body`` to ``payload.url``; 5xx and network errors retry, 4xx do not."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    url = payload.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise phoenixq.PermanentError("payload.url must be an http(s) URL")
    # the receiver deduplicates on this header, so a retried delivery is harmless
    headers = {"Idempotency-Key": job.idempotency_key or job.id}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
        url, json=payload.get("body"), headers=headers
    ) as response:
        if 400 <= response.status < 500:
            raise phoenixq.PermanentError(f"{url} refused the webhook: HTTP {response.status}")
        response.raise_for_status()  # 5xx: raise, so the job retries with backoff
        return {"status": response.status, "attempt": job.attempt}


@phoenixq.handler("report.word_count")
async def word_count(job: phoenixq.Job) -> dict[str, int]:
    """Count the words of ``payload.text`` (a pure function: safe to run twice)."""
    text = (job.payload or {}).get("text") if isinstance(job.payload, dict) else None
    if not isinstance(text, str):
        raise phoenixq.PermanentError("payload.text must be a string")
    return {"words": len(text.split())}
