"""Fixtures for the Redis Cluster tests: one 3-master cluster for the session.

The cluster has 3 masters and no replicas: on 2 shared cores the replicas only double
every write (replication) without adding anything these tests check — failover is
tested with Sentinel (``test_sentinel.py``), and replica sync made the suite slower
(see docs/operations.md). ``redis_url`` and ``queue`` override the top-level fixtures,
so ``settings``, ``store`` and ``topology`` point at the cluster and core tests imported
into this package rerun unchanged against it. Queue names rotate over the masters.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.cluster import LocalCluster

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
def redis_url(cluster: LocalCluster) -> str:
    """The shared fixtures (settings, store, topology) run against the cluster."""
    return cluster.url
