"""Redis connections with deliberate timeouts and retries.

redis-py's defaults can hang a call for many seconds while Redis is unreachable; every
PhoenixQ process instead fails fast (one quick retry for a dropped connection, then a
``redis.exceptions.ConnectionError`` / ``TimeoutError``) and decides itself how to wait.

``REDIS_URL`` selects the deployment (see ``parse_redis_url``):

* ``redis://``, ``rediss://``, ``unix://`` — one node;
* ``redis+cluster://HOST:PORT[,HOST:PORT...][/]`` — Redis Cluster, from those seeds;
* ``redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE_NAME[/DB]`` — the master the
  sentinels name, followed across failovers.

Every process builds its clients here, so all of them read the URL the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.settings import Settings

#: Errors meaning "Redis is unreachable or unhealthy right now" (retry later). The
#: cluster ones: TRYAGAIN (a multi-key script met a slot mid-migration), CLUSTERDOWN and
#: exhausted redirections (ClusterError), an uncovered slot or no reachable node during
#: a failover; READONLY: a node that was demoted while we were connected; OOM: Redis at
#: its maxmemory with noeviction refuses writes until memory frees up (the API still
#: answers it with its own problem, see services/api/middleware.py).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError,
               TryAgainError, ClusterError, SlotNotCoveredError, RedisClusterUnreachableError,
               ReadOnlyError, OutOfMemoryError)
#: Any error from Redis, including script errors and OOM refusals.
REDIS_ERRORS = (RedisError, ConnectionError, OSError)

CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
SINGLE_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PORTS = {CLUSTER_SCHEME: 6379, SENTINEL_SCHEME: 26379}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What ``REDIS_URL`` names: one node, a cluster's seed nodes, or a sentinel set."""

    kind: str  # "single" | "cluster" | "sentinel"
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """Read ``REDIS_URL``; raises ``ValueError`` naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in SINGLE_SCHEMES:
        return RedisTarget("single", url)
    if not sep or scheme not in DEFAULT_PORTS:
        raise ValueError(f"REDIS_URL {url!r}: use redis://, rediss://, unix://, "
                         f"{CLUSTER_SCHEME}://HOST:PORT[,...] or "
                         f"{SENTINEL_SCHEME}://HOST:PORT[,...]/SERVICE[/DB]")
    if "?" in rest or "#" in rest:
        raise ValueError(f"REDIS_URL {url!r}: query options are not supported here")
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    nodes = tuple(_node(h, DEFAULT_PORTS[scheme], url) for h in hosts.split(","))
    username, password = _credentials(userinfo)
    parts = [p for p in path.split("/") if p]
    if scheme == CLUSTER_SCHEME:
        if parts:
            raise ValueError(f"REDIS_URL {url!r}: a cluster URL takes no path (db 0 only)")
        return RedisTarget("cluster", url, nodes, username=username, password=password)
    if not 1 <= len(parts) <= 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"REDIS_URL {url!r}: a sentinel URL ends in /SERVICE_NAME[/DB]")
    db = int(parts[1]) if len(parts) == 2 else 0
    return RedisTarget("sentinel", url, nodes, unquote(parts[0]), db, username, password)


def _node(text: str, default_port: int, url: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"REDIS_URL {url!r}: bad node {text!r} (want HOST:PORT)")
    return host, int(port)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    if not sep:
        return None, unquote(user)
    return unquote(user) or None, unquote(password)


def connect(settings: Settings, *, blocking_s: float = 0.0, **extra: Any) -> Any:
    """A client for ``settings.redis_url``: ``Redis``, ``RedisCluster`` or a Sentinel master.

    ``blocking_s`` is the longest blocking command the client will send (BLMOVE):
    its read timeout is that plus the normal timeout, so a hung server is still noticed.
    """
    timeout = settings.redis_timeout_ms / 1000
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout + blocking_s,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
        "health_check_interval": 0,
        "client_name": extra.pop("client_name", None),
        **extra,
    }
    target = parse_redis_url(settings.redis_url)
    if target.kind == "cluster":
        return _cluster(target, options)
    if target.kind == "sentinel":
        return _sentinel_master(target, options, timeout)
    return Redis.from_url(settings.redis_url, **options)


def _cluster(target: RedisTarget, options: dict[str, Any]) -> RedisCluster:
    seeds = [ClusterNode(host, port) for host, port in target.nodes]
    return RedisCluster(startup_nodes=seeds, username=target.username,
                        password=target.password, **options)


class SentinelMaster(Redis):
    """The master a sentinel set names; closing it also closes the sentinel connections."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def _sentinel_master(target: RedisTarget, options: dict[str, Any], timeout: float) -> Redis:
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )
    client = sentinel.master_for(target.service, redis_class=SentinelMaster, db=target.db,
                                 username=target.username, password=target.password,
                                 **options)
    client.sentinel = sentinel
    return client
