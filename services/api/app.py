"""The API's aiohttp application factory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from services.api import views
from services.api.problems import Problem, problem
from services.api.typedefs import redis_key, settings_key, store_key
from shared import logging as plog
from shared.connection import REDIS_ERRORS, connect
from shared.errors import ValidationError
from shared.settings import Settings
from shared.store import Store

#: Longest an API call may wait on Redis before answering 503.
REDIS_DEADLINE_S = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = plog.get_logger("api")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in and out; every failure becomes a problem+json response."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request["request_id"] = request_id
    try:
        async with asyncio.timeout(REDIS_DEADLINE_S):
            response = await handler(request)
    except Problem as exc:
        response = exc.response()
    except ValidationError as exc:
        response = problem(400, "validation_error", "Invalid request", exc.message,
                           field=exc.field)
    except web.HTTPException as exc:
        response = problem(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason,
                           exc.text or exc.reason)
    except (TimeoutError, *REDIS_ERRORS) as exc:
        log.warning("Redis unavailable", error=str(exc), request_id=request_id)
        response = problem(503, "redis_unavailable", "Service unavailable",
                           "The job store is unreachable; retry shortly.",
                           headers={"Retry-After": "1"})
    except Exception:
        log.exception("Unhandled error", request_id=request_id)
        response = problem(500, "internal_error", "Internal error",
                           "An unexpected error occurred; it has been logged.")
    response.headers["X-Request-Id"] = request_id
    return response


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware],
                          client_max_size=settings.api_max_body_bytes)
    app[settings_key] = settings
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_post("/jobs", views.create_job)
    app.router.add_get("/jobs/{jobId}", views.get_job)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = connect(app[settings_key], client_name="phx-api")
    app[redis_key] = client
    app[store_key] = Store(client, app[settings_key])
    yield
    await client.aclose()


def main() -> None:
    settings = Settings.from_env()
    plog.configure(settings.log_level, service="api")
    app = create_app(settings)

    async def announce(_: web.Application) -> None:  # signal handlers are installed by now
        log.info("API listening", host=settings.host, port=settings.port)

    app.on_startup.append(announce)
    web.run_app(app, host=settings.host, port=settings.port,
                access_log=None, print=None)
