"""Redis connections with deliberate timeouts and retries.

redis-py's defaults can hang a call for many seconds while Redis is unreachable; every
PhoenixQ process instead fails fast (one quick retry for a dropped connection, then a
``redis.exceptions.ConnectionError`` / ``TimeoutError``) and decides itself how to wait.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.settings import Settings

#: Errors meaning "Redis is unreachable or unhealthy right now" (retry later).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: Any error from Redis, including script errors and OOM refusals.
REDIS_ERRORS = (RedisError, ConnectionError, OSError)


def connect(settings: Settings, *, blocking_s: float = 0.0, **extra: Any) -> Redis:
    """A client for ``settings.redis_url``.

    ``blocking_s`` is the longest blocking command the client will send (BLMOVE):
    its read timeout is that plus the normal timeout, so a hung server is still noticed.
    """
    timeout = settings.redis_timeout_ms / 1000
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout + blocking_s,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        health_check_interval=0,
        client_name=extra.pop("client_name", None),
        **extra,
    )
