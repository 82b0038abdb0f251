"""Runs one service object: logging, Redis, signals, an optional /healthz + /metrics server.

A service is a small object with ``start()``, ``run()`` (returns when stopped),
``stop()`` (ask it to stop; called from a signal) and ``shutdown()`` (release
resources). ``run_service`` wires it to SIGTERM/SIGINT and exits 0 after a clean stop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aiohttp import web

from shared import logging as plog
from shared import metrics, tracing
from shared.settings import Settings


class Service(Protocol):
    name: str

    async def start(self) -> None: ...
    async def run(self) -> None: ...
    def stop(self) -> None: ...
    async def shutdown(self) -> None: ...
    def healthy(self) -> bool: ...


async def _health_server(service: Service, settings: Settings) -> web.AppRunner | None:
    if not settings.health_port:
        return None

    async def healthz(_: web.Request) -> web.Response:
        ok = service.healthy()
        return web.json_response({"status": "ok" if ok else "degraded", "service": service.name},
                                 status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics.metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.health_port).start()
    return runner


async def serve(service: Service, settings: Settings) -> None:
    log = plog.get_logger(service.name)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    metrics.instrument_clients(service)
    health = await _health_server(service, settings)
    try:
        await service.start()
        await service.run()
    finally:
        await service.shutdown()
        if health is not None:
            await health.cleanup()
        log.info("Stopped", service=service.name)


def run_service(factory: Callable[[Settings], Service], name: str) -> None:
    """Entry point of ``phoenixq <name>`` and ``python -m services.<name>``."""
    settings = Settings.from_env()
    plog.configure(settings.log_level, service=name)
    tracing.configure_from_env(name)
    run(serve(factory(settings), settings))


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop when it is installed, else asyncio's loop."""
    try:
        import uvloop  # optional (not on Windows): a faster event loop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
