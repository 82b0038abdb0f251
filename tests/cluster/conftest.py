"""Fixtures for the Redis Cluster tests: one 3-master cluster for the session.

The cluster has 3 masters and no replicas: on 2 shared cores the replicas only double
every write (replication) without adding anything these tests check — failover is
tested with Sentinel (``test_sentinel.py``), and replica sync made the suite slower
(see docs/operations.md). Fixtures named like the top-level ones (``settings``,
``store``, ``topology``, ``queue``) point at the cluster, so core tests imported into
this package rerun unchanged against it. Queue names rotate over the masters.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from shared.connection import connect
from shared.settings import Settings
from shared.store import Store
from tests.harness.cluster import LocalCluster
from tests.harness.services import Topology

_next_master = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: runs against a local Redis Cluster")
    config.addinivalue_line("markers", "sentinel: runs against local Sentinel processes")


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3, replicas=0) as local:
        yield local


@pytest.fixture
def queue(cluster: LocalCluster) -> str:
    """A fresh queue whose slot is on the next master in turn."""
    masters = cluster.primaries()
    want = masters[next(_next_master) % len(masters)].port
    while True:
        name = f"q-{uuid.uuid4().hex[:10]}"
        if cluster.owner(cluster.keyslot(name)).port == want:
            return name


@pytest.fixture
def settings(cluster: LocalCluster, queue: str) -> Settings:
    return Settings.from_env(
        {}, redis_url=cluster.url, queues=queue, heartbeat_ms=200, worker_ttl_ms=1000,
        backoff_base_ms=100, backoff_cap_ms=1000, reaper_interval_ms=100,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    client = connect(settings)
    yield Store(client, settings)
    await client.aclose()


@pytest.fixture
def topology(cluster: LocalCluster, queue: str) -> Iterator[Topology]:
    topo = Topology(cluster.url, PHOENIXQ_QUEUES=queue)
    yield topo
    topo.stop()
