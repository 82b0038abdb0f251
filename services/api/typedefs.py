"""Typed application keys of the API."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from services.api.ratelimit import TokenBucket
from shared.batching import GroupCommit
from shared.jobs import JobSpec
from shared.settings import Settings
from shared.store import EnqueueResult, Store

settings_key = web.AppKey("settings", Settings)
redis_key = web.AppKey("redis", Redis)
store_key = web.AppKey("store", Store)
#: Group commit of single enqueues: queue -> specs -> one enqueue script call.
enqueuer_key = web.AppKey("enqueuer", GroupCommit[str, JobSpec, EnqueueResult])
#: Rate limit of DLQ bulk replays, per queue.
replay_limit_key = web.AppKey("replay_limit", TokenBucket)
#: The OpenAPI document, built once per app from its settings.
openapi_key = web.AppKey("openapi", dict[str, Any])
#: The request id (X-Request-Id in and out), set by the context middleware.
request_id_key = web.RequestKey("request_id", str)
#: What the view did, for the request's one log line: its event name and fields.
log_line_key = web.RequestKey("log_line", tuple[str, dict[str, Any]])
