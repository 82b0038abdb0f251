"""Shared fixtures: a private redis-server for the session, a queue name per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from shared.connection import connect
from shared.settings import Settings
from shared.store import Store
from tests.harness.redis_server import RedisServer
from tests.harness.services import Topology


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the tests that do not break it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The Redis the shared fixtures use (tests/cluster overrides it with a cluster)."""
    return redis_server.url


@pytest.fixture
def settings(redis_url: str, queue: str) -> Settings:
    return Settings.from_env(
        {}, redis_url=redis_url, queues=queue, heartbeat_ms=200, worker_ttl_ms=1000,
        backoff_base_ms=100, backoff_cap_ms=1000, reaper_interval_ms=100,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    client = connect(settings)
    yield Store(client, settings)
    await client.aclose()


@pytest.fixture
def topology(redis_url: str, queue: str) -> Iterator[Topology]:
    """Real service processes against the session's Redis, serving this test's queue."""
    topo = Topology(redis_url, PHOENIXQ_QUEUES=queue)
    yield topo
    topo.stop()
