"""Fixtures of the fault suite: a private Redis per test, a ledger, real service processes.

Every test module here sets ``pytestmark = pytest.mark.fault``. ``--soak`` multiplies the
sizes by ``scale`` (10). The fixtures:

* ``fault_redis``     a private redis-server for this test only (no AOF); for AOF or other
                      options use ``redis_factory(appendonly=True, appendfsync="always")``.
* ``ledger_path``     an initialised SQLite ledger (``tests.fault.ledger_handlers``).
* ``fault_env``       the environment every service process gets (Redis, queue, handlers,
                      ledger, a large events stream).
* ``fault_topology``  a ``Topology`` bound to ``fault_redis`` with ``fault_env``.
* ``fault_store``     a ``Store`` on ``fault_redis`` (same events MAXLEN as the services).

Helpers (module ``tests.fault.util``): ``enqueue`` (batches of 500 in one Lua call),
``effect_specs``, ``start`` (a service started off the event loop), ``worker_id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.connection import connect
from shared.settings import Settings
from shared.store import Store
from tests.fault import checker
from tests.fault import ledger_handlers as ledger
from tests.harness.redis_server import RedisServer
from tests.harness.services import Topology

EVENTS_MAXLEN = 2_000_000  # keep every event of a run: the checks count them per job


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> int:
    """1 in CI, 10 with ``--soak``."""
    return 10 if request.config.getoption("--soak") else 1


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """``make(**RedisServer kwargs)`` starts a private redis-server, stopped at teardown."""
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fault_redis(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return ledger.init(tmp_path / "ledger.sqlite")


@pytest.fixture
def fault_env(fault_redis: RedisServer, queue: str, ledger_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": fault_redis.url,
        "PHOENIXQ_QUEUES": queue,
        "PHOENIXQ_HANDLERS": "tests.fault.ledger_handlers",
        ledger.ENV: str(ledger_path),
        "PHOENIXQ_EVENTS_MAXLEN": str(EVENTS_MAXLEN),
    }


@pytest.fixture
def fault_topology(fault_redis: RedisServer, fault_env: dict[str, str]) -> Iterator[Topology]:
    topo = Topology(fault_redis.url, **fault_env)
    yield topo
    topo.stop()


@pytest.fixture
def fault_settings(fault_redis: RedisServer, queue: str) -> Settings:
    return Settings.from_env({}, redis_url=fault_redis.url, queues=queue,
                             events_maxlen=EVENTS_MAXLEN, redis_timeout_ms=10_000)


@pytest.fixture
async def fault_store(fault_settings: Settings) -> AsyncIterator[Store]:
    client = connect(fault_settings)
    yield Store(client, fault_settings)
    await client.aclose()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if checker.LINES:
        terminalreporter.section("fault suite figures")
        for line in checker.LINES:
            terminalreporter.write_line(line)
