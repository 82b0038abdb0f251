"""The API's aiohttp application factory and entry point."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from services.api import openapi
from services.api.middleware import auth_middleware, context_middleware, deadline_middleware
from services.api.ratelimit import TokenBucket
from services.api.routes import setup_routes
from services.api.typedefs import (
    enqueuer_key,
    openapi_key,
    redis_key,
    replay_limit_key,
    settings_key,
    store_key,
)
from shared import logging as plog
from shared import metrics, runtime
from shared.batching import GroupCommit
from shared.connection import connect
from shared.settings import Settings

log = plog.get_logger("api")


def create_app(settings: Settings) -> web.Application:
    """The API: middlewares (request id and errors, auth, deadline), routes, Redis."""
    app = web.Application(
        middlewares=[metrics.http_middleware, context_middleware, auth_middleware,
                     deadline_middleware],
        client_max_size=settings.api_max_body_bytes,
    )
    app[settings_key] = settings
    app[replay_limit_key] = TokenBucket()
    app[openapi_key] = openapi.build(settings)
    app.cleanup_ctx.append(_redis_ctx)
    setup_routes(app)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = connect(app[settings_key], client_name="phx-api")
    app[redis_key] = client
    metrics.instrument_redis(client)
    store = metrics.InstrumentedStore(client, app[settings_key])
    app[store_key] = store
    app[enqueuer_key] = GroupCommit(store.enqueue)  # concurrent POST /jobs share a call
    yield
    await client.aclose()


async def serve(settings: Settings) -> None:
    """Run the API until SIGTERM or SIGINT; "API listening" is logged once the port is
    bound and the signal handlers are installed, so a caller may connect (or stop it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        reuse = settings.api_processes > 1  # the port is shared by sibling processes
        await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse).start()
        log.info("API listening", host=settings.host, port=settings.port,
                 auth=bool(settings.api_token))
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("Stopped", service="api")


def main() -> None:
    settings = Settings.from_env()
    plog.configure(settings.log_level, service="api")
    if settings.api_processes > 1 and not os.environ.get(_CHILD):
        sys.exit(supervise(settings.api_processes))
    runtime.run(serve(settings))


_CHILD = "PHOENIXQ_API_CHILD"  # set in the processes ``supervise`` starts


def supervise(count: int) -> int:
    """Run ``count`` API processes on one port; stop them all when one exits or on a signal.

    The children bind with SO_REUSEPORT and the kernel spreads connections over them.
    A child that dies takes its siblings down and the exit code is non-zero, so the
    process manager (compose, systemd, honcho) restarts the API as one unit.
    """
    env = {**os.environ, _CHILD: "1"}
    children = [subprocess.Popen([sys.executable, "-m", "services.api"], env=env)
                for _ in range(count)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    log.info("API supervisor started", processes=count, pids=[c.pid for c in children])
    while all(child.poll() is None for child in children):
        with contextlib.suppress(subprocess.TimeoutExpired):
            children[0].wait(timeout=0.5)
    if not stopping:
        log.error("An API process exited; stopping the others",
                  codes=[child.poll() for child in children])
        forward(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return 0 if stopping and all(code in (0, -signal.SIGTERM, -signal.SIGINT) for code in codes) \
        else 1
