"""GET /events — a queue's lifecycle events as Server-Sent Events.

``?queue=`` picks the queue (default ``default``; with only ``jobId`` given, the job's
own queue). ``?jobId=`` keeps one job's events and starts from the oldest event still in
the stream; without it the stream starts with the next event. A reconnecting client
sends ``Last-Event-ID`` (or ``?lastEventId=``), the stream entry id of the last event it
saw, and gets everything after it. Each client reads with ``XREAD BLOCK`` on a
dedicated connection of its own; a comment line every ``HEARTBEAT_S`` keeps proxies
from closing an idle stream and notices a client that went away.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from services.api import validation as v
from services.api.problems import Problem
from services.api.typedefs import settings_key, store_key
from shared import events, metrics
from shared import logging as plog
from shared.connection import UNAVAILABLE, connect
from shared.errors import JobNotFound

HEARTBEAT_S = 15.0
RETRY_MS = 2000

log = plog.get_logger("api")


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Stream events until the client disconnects (or Redis becomes unreachable)."""
    queue, job_id = await _target(request)
    after = _resume_from(request)
    client = connect(request.app[settings_key], blocking_s=events.BLOCK_MS / 1000,
                     client_name="phx-api-sse")
    metrics.instrument_redis(client)
    try:
        if after is None:
            after = "0-0" if job_id else await events.last_id(client, queue)
        response = await _open(request)
        metrics.SSE_CLIENTS.inc()
        try:
            await _pump(response, client, queue, job_id, after)
        except (ConnectionResetError, *UNAVAILABLE) as exc:
            log.info("Event stream ended", queue=queue, reason=type(exc).__name__)
        finally:
            metrics.SSE_CLIENTS.dec()
        return response
    finally:
        await client.aclose()


async def _target(request: web.Request) -> tuple[str, str | None]:
    job_id = request.query.get("jobId")
    if job_id is not None:
        job_id = v.check_job_id(job_id)
    queue = request.query.get("queue")
    if queue is not None:
        v.check_name("queue", queue)
    elif job_id is not None:
        try:
            queue = await request.app[store_key].find_queue(job_id)
        except JobNotFound:
            raise Problem(404, "job_not_found", "Job not found", f"No job {job_id} exists.",
                          field="jobId") from None
    return queue or "default", job_id


def _resume_from(request: web.Request) -> str | None:
    last = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if last is None:
        return None
    if not events.valid_id(last):
        raise Problem(400, "validation_error", "Invalid request",
                      "Last-Event-ID must be a stream entry id such as 1700000000000-0.",
                      field="Last-Event-ID")
    return last


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", "X-Request-Id": request.get("request_id", ""),
    })
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    return response


async def _pump(response: web.StreamResponse, client: object, queue: str,
                job_id: str | None, after: str) -> None:
    quiet_since = time.monotonic()
    while True:
        batch = await events.read(client, queue, after, block_ms=events.BLOCK_MS)
        for event in batch:
            after = event.id
            if job_id is None or event.job_id == job_id:
                await response.write(format_event(event))
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= HEARTBEAT_S:
            await response.write(b": keep-alive\n\n")
            quiet_since = time.monotonic()


def format_event(event: events.Event) -> bytes:
    """One SSE message: ``id`` (the stream entry id), ``event`` (its name), JSON ``data``."""
    data = orjson.dumps(event.to_api()).decode()
    return f"id: {event.id}\nevent: {event.event}\ndata: {data}\n\n".encode()
