"""The API while its Redis is stopped, frozen or full: 503 within the bound, never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from services.api.app import create_app
from shared.settings import Settings
from tests.harness.redis_server import RedisServer
from tests.harness.wait import async_wait_until

pytestmark = pytest.mark.fault
BOUND_S = 2.5
CALLS = [("POST", "/jobs", {"type": "t"}), ("POST", "/jobs/batch", {"jobs": [{"type": "t"}]}),
         ("GET", "/jobs/some-id", None), ("GET", "/queues", None),
         ("POST", "/jobs/some-id/cancel", None), ("GET", "/readyz", None)]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def api(aiohttp_client: Any, private_redis: RedisServer, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(_settings(settings, private_redis)))


def _settings(settings: Settings, server: RedisServer) -> Settings:
    return Settings.from_env({}, redis_url=server.url)


async def assert_unavailable(api: TestClient, code: str = "redis_unavailable") -> None:
    """Every Redis-backed call answers a 503 problem with Retry-After, within the bound."""
    for method, path, body in CALLS:
        started = time.monotonic()
        resp = await api.request(method, path, json=body)
        elapsed = time.monotonic() - started
        problem = await resp.json(content_type=None)
        assert resp.status == 503, (path, problem)
        assert problem["code"] == code and int(resp.headers["Retry-After"]) >= 1
        assert elapsed <= BOUND_S, (path, elapsed)
    assert (await api.get("/healthz")).status == 200


async def enqueue_works(api: TestClient) -> bool:
    return (await api.post("/jobs", json={"type": "t"})).status == 202


async def test_redis_killed_then_restarted(api: TestClient, private_redis: RedisServer) -> None:
    assert await enqueue_works(api)
    private_redis.kill()
    await assert_unavailable(api)
    private_redis.start()
    await async_wait_until(lambda: enqueue_works(api), timeout=10, what="API recovery")
    assert (await api.get("/readyz")).status == 200


async def test_redis_frozen_then_thawed(api: TestClient, private_redis: RedisServer) -> None:
    ids = [(await (await api.post("/jobs", json={"type": f"t{i}"})).json())["jobId"]
           for i in range(3)]
    private_redis.pause()
    try:
        await assert_unavailable(api)
    finally:
        private_redis.resume()
    await async_wait_until(lambda: enqueue_works(api), timeout=10, what="API recovery")
    for i, job_id in enumerate(ids):  # no reply from a cancelled call is read as another's
        job = await (await api.get(f"/jobs/{job_id}")).json()
        assert (job["jobId"], job["type"]) == (job_id, f"t{i}")


@pytest.fixture
def small_redis() -> Iterator[RedisServer]:
    with RedisServer(maxmemory="3mb") as server:
        yield server


async def test_out_of_memory_is_503_and_writes_nothing(
    aiohttp_client: Any, small_redis: RedisServer, settings: Settings
) -> None:
    api = await aiohttp_client(create_app(_settings(settings, small_redis)))
    assert await enqueue_works(api)  # the queue is registered and the script loaded
    filler = Redis.from_url(small_redis.url)  # kept open: closing it frees its buffers
    try:
        await _fill(filler)
        before = small_redis.cli("DBSIZE"), small_redis.cli("LLEN", "phx:{default}:ready")
        for path, body in [("/jobs", {"type": "t", "idempotencyKey": "k1"}),
                           ("/jobs/batch", {"jobs": [{"type": "t"}] * 50})]:
            resp = await api.post(path, json=body)
            problem = await resp.json(content_type=None)
            assert resp.status == 503 and problem["code"] == "redis_out_of_memory", problem
            assert "Retry-After" in resp.headers
        after = small_redis.cli("DBSIZE"), small_redis.cli("LLEN", "phx:{default}:ready")
        assert after == before
        assert small_redis.cli("EXISTS", "phx:{default}:idem:k1") == "0"
    finally:
        await filler.aclose()


async def _fill(client: Redis) -> None:
    """Write filler keys, each size until Redis refuses with OOM, down to a few bytes.

    A refused command's own buffer is freed, so one refusal of a large value leaves room;
    shrinking the values leaves Redis just at its limit.
    """
    for size in (50_000, 5_000, 500, 50, 5):
        for i in range(10_000):
            try:
                await client.set(f"filler:{size}:{i}", b"x" * size)
            except OutOfMemoryError:
                break
        else:
            raise AssertionError("Redis never ran out of memory")
