"""Queue views: stats, pause/resume, and the dead-letter queue (list, replay, purge)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from services.api import validation as v
from services.api.problems import Problem, json_response
from services.api.ratelimit import retry_after
from services.api.typedefs import replay_limit_key, store_key
from shared import logging as plog
from shared.errors import ValidationError
from shared.jobs import Job
from shared.store import Store

log = plog.get_logger("api")

DEAD_PAGE_DEFAULT, DEAD_PAGE_MAX, CURSOR_MAX = 50, 500, 10**9
REPLAY_DEFAULT, REPLAY_MAX = 1000, 10_000
#: Jobs one replay or purge script handles; a request loops over such batches.
BATCH = 500
#: A purge stops looping after this long and reports what remains (well inside 2 s).
PURGE_BUDGET_S = 1.0


def _queue(request: web.Request) -> str:
    return v.check_name("queue", request.match_info["queue"])


async def known_queue(request: web.Request) -> str:
    """The queue in the path; 404 unless some job was ever enqueued to it (or paused)."""
    queue = _queue(request)
    if queue not in await request.app[store_key].queues():
        raise Problem(404, "queue_not_found", "Queue not found",
                      f"No queue {queue} exists.", field="queue")
    return queue


async def list_queues(request: web.Request) -> web.Response:
    """GET /queues — counts per state, oldest ready age and paused flag, per queue."""
    store = request.app[store_key]
    stats = [st.to_api() for st in await store.queues_stats(await store.queues())]
    return json_response({"queues": stats})


async def get_queue(request: web.Request) -> web.Response:
    """GET /queues/{queue} — one queue's counts, oldest ready age and paused flag."""
    queue = await known_queue(request)
    return json_response((await request.app[store_key].queue_stats(queue)).to_api())


async def pause_queue(request: web.Request) -> web.Response:
    """POST /queues/{queue}/pause — workers stop claiming from the queue."""
    queue = _queue(request)
    await request.app[store_key].pause(queue)
    log.info("Paused queue", queue=queue)
    return json_response({"queue": queue, "paused": True})


async def resume_queue(request: web.Request) -> web.Response:
    """POST /queues/{queue}/resume — workers claim from the queue again."""
    queue = _queue(request)
    await request.app[store_key].resume(queue)
    log.info("Resumed queue", queue=queue)
    return json_response({"queue": queue, "paused": False})


def _dead_item(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.id, "type": job.type, "status": job.state, "attempts": job.attempt,
        "maxAttempts": job.max_attempts, "createdAt": job.created_at,
        "diedAt": job.finished_at, "lastError": job.last_error, "replays": job.replays,
    }


async def list_dead(request: web.Request) -> web.Response:
    """GET /queues/{queue}/dead — the DLQ newest first; ``cursor`` from ``nextCursor``."""
    queue = await known_queue(request)
    cursor = v.query_int(request, "cursor", 0, 0, CURSOR_MAX)
    limit = v.query_int(request, "limit", DEAD_PAGE_DEFAULT, 1, DEAD_PAGE_MAX)
    jobs, next_cursor = await request.app[store_key].dead_jobs(queue, cursor, limit)
    return json_response({
        "queue": queue,
        "jobs": [_dead_item(j) for j in jobs],
        "nextCursor": None if next_cursor is None else str(next_cursor),
    })


async def replay_dead(request: web.Request) -> web.Response:
    """POST /queues/{queue}/dead/replay — the listed ids, or the oldest ``limit`` dead."""
    queue = await known_queue(request)
    ids, limit = v.replay_request(await v.read_json(request, optional=True))
    if limit is not None and not 1 <= limit <= REPLAY_MAX:
        raise ValidationError("limit", f"must be between 1 and {REPLAY_MAX}")
    wait = request.app[replay_limit_key].take(queue)
    if wait:
        raise Problem(429, "rate_limited", "Too many replays",
                      f"Bulk replays of {queue} are rate-limited; retry later.",
                      headers={"Retry-After": retry_after(wait)})
    store = request.app[store_key]
    if ids:
        replayed, skipped = await store.replay_dead(queue, ids)
        counts = len(replayed), len(skipped)
    else:
        counts = await _replay_oldest(store, queue, limit or REPLAY_DEFAULT)
    remaining = (await store.queue_stats(queue)).dead
    log.info("Replayed dead jobs", queue=queue, replayed=counts[0], skipped=counts[1])
    return json_response({"queue": queue, "replayed": counts[0], "skipped": counts[1],
                          "remaining": remaining})


async def _replay_oldest(store: Store, queue: str, limit: int) -> tuple[int, int]:
    replayed = skipped = 0
    while replayed + skipped < limit:
        batch = min(BATCH, limit - replayed - skipped)
        done, passed = await store.replay_dead(queue, limit=batch)
        replayed, skipped = replayed + len(done), skipped + len(passed)
        if len(done) + len(passed) < batch:
            break
    return replayed, skipped


async def purge_dead(request: web.Request) -> web.Response:
    """DELETE /queues/{queue}/dead?confirm=<queue> — delete every dead job for good."""
    queue = await known_queue(request)
    if request.query.get("confirm") != queue:
        raise Problem(400, "confirmation_required", "Confirmation required",
                      f"Purging deletes the dead jobs for good: add ?confirm={queue}.",
                      field="confirm")
    store, purged, remaining = request.app[store_key], 0, 1
    deadline = time.monotonic() + PURGE_BUDGET_S
    while remaining and time.monotonic() < deadline:
        count, remaining = await store.purge_dead(queue, BATCH)
        purged += count
    log.info("Purged dead jobs", queue=queue, purged=purged, remaining=remaining)
    return json_response({"queue": queue, "purged": purged, "remaining": remaining})
