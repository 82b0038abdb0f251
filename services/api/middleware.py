"""Request id and log context, bearer-token auth, and the problem+json error mapping."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, RedisError

from services.api.problems import Problem, from_http_exception, problem
from services.api.typedefs import log_line_key, request_id_key, settings_key
from shared import logging as plog
from shared.connection import UNAVAILABLE
from shared.errors import ValidationError

#: Longest an API call may wait on Redis before answering 503 (body reading excluded).
REDIS_DEADLINE_S = 2.0
#: Routes answered without a token even when auth is on.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
#: Long-lived streams (SSE): no deadline; the view bounds each Redis call itself.
STREAMING_PATHS = frozenset({"/events"})
#: An incoming X-Request-Id is kept only if it is this safe; otherwise a new one is made.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = plog.get_logger("api")


#: Generated request ids: a random per-process prefix and a counter (unique, and cheap:
#: no system call per request, unlike uuid4).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count()


def request_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if REQUEST_ID_RE.fullmatch(given) else f"{_ID_PREFIX}{next(_ids):016x}"


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in and out, bound into every log line; one canonical line per request.

    The canonical line is ``Request``, or the event a view named with ``log_line`` (such
    as ``Enqueued job``), with the view's fields added.
    """
    request_id = request_id_of(request)
    request[request_id_key] = request_id
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await _guarded(request, handler)
        response.headers["X-Request-Id"] = request_id
        event, fields = request.get(log_line_key, _NO_LINE)
        log.info(event, method=request.method, path=request.path, status=response.status,
                 ms=round((time.perf_counter() - started) * 1000, 2), **fields)
    return response


_NO_LINE: tuple[str, dict[str, object]] = ("Request", {})


def log_line(request: web.Request, event: str, **fields: object) -> None:
    """Name the request's canonical log line and add fields to it (a view's outcome)."""
    request[log_line_key] = (event, fields)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler; map every failure to a problem response (never a traceback)."""
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response()
    except ValidationError as exc:
        return problem(400, "validation_error", "Invalid request",
                       f"{exc.field} {exc.message}", field=exc.field)
    except web.HTTPException as exc:
        return from_http_exception(exc)
    except (TimeoutError, RedisError, *UNAVAILABLE) as exc:
        return _redis_problem(exc)
    except Exception:
        log.exception("Unhandled error", path=request.path)
        return problem(500, "internal_error", "Internal error",
                       "An unexpected error occurred; it has been logged.")


def _redis_problem(exc: BaseException) -> web.Response:
    retry = {"Retry-After": "1"}
    if isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM"):
        log.error("Redis out of memory", error=str(exc))
        return problem(503, "redis_out_of_memory", "Job store full",
                       "Redis refused the write: it is out of memory (maxmemory). Nothing "
                       "was written; retry after jobs drain or memory is raised.",
                       headers={"Retry-After": "5"})
    transient = (TimeoutError, BusyLoadingError, ReadOnlyError, *UNAVAILABLE)
    if isinstance(exc, transient):
        log.warning("Redis unavailable", error=str(exc) or type(exc).__name__)
        return problem(503, "redis_unavailable", "Service unavailable",
                       "The job store is unreachable or slow; retry shortly.", headers=retry)
    log.error("Redis error", error=str(exc))
    return problem(500, "redis_error", "Job store error",
                   "The job store answered with an error; it has been logged.")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With ``PHOENIXQ_API_TOKEN`` set, every route but the probes needs the bearer token."""
    token = request.app[settings_key].api_token
    if token and request.path not in PUBLIC_PATHS and not _authorized(request, token):
        raise Problem(401, "unauthorized", "Unauthorized",
                      "Send the API token as 'Authorization: Bearer <token>'.",
                      headers={"WWW-Authenticate": 'Bearer realm="phoenixq"'})
    return await handler(request)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.encode()
    offered = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(offered, expected)


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body first (a slow upload is not a slow Redis), then bound the view."""
    if request.body_exists:
        await request.read()
    if request.path in STREAMING_PATHS:
        return await handler(request)
    async with asyncio.timeout(REDIS_DEADLINE_S):
        return await handler(request)
