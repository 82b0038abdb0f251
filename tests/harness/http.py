"""HTTP helpers for tests that talk to real service processes."""

from __future__ import annotations

import aiohttp

from tests.harness.services import ServiceProcess, Topology
from tests.harness.wait import async_wait_until


async def answers(url: str) -> bool:
    """True once ``url`` answers at all (any status)."""
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status > 0
    except aiohttp.ClientConnectionError:
        return False


async def start_api(topology: Topology) -> ServiceProcess:
    """Start the API and wait until its port answers ("API listening" precedes the bind)."""
    proc = topology.start("api")
    await async_wait_until(lambda: answers(f"{topology.api_url}/healthz"), 15,
                           what="the API to accept connections")
    return proc
