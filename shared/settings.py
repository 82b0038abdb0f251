"""One typed settings object per process, built from the environment.

Every field's default is written where it is declared; its environment variable is
named in the field metadata. ``Settings.from_env()`` validates and converts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _env(name: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration shared by all services, the CLI and the Python client."""

    redis_url: str = _env(
        "REDIS_URL", "redis://localhost:6379/0",
        "Redis to use: `redis://`, `rediss://` or `unix://` (one node); "
        "`redis+cluster://HOST:PORT[,HOST:PORT...]` (Redis Cluster seeds); "
        "`redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]` (Sentinel).",
    )
    redis_timeout_ms: int = _env(
        "PHOENIXQ_REDIS_TIMEOUT_MS", 2000, "Connect and command timeout for Redis calls."
    )
    durable_enqueue_replicas: int = _env(
        "PHOENIXQ_DURABLE_ENQUEUE_REPLICAS", 0,
        "Answer 202 only once this many replicas have the job (WAIT), else 503 (0: off).",
    )
    durable_enqueue_timeout_ms: int = _env(
        "PHOENIXQ_DURABLE_ENQUEUE_TIMEOUT_MS", 1000, "Longest WAIT for those replicas."
    )
    host: str = _env("HOST", "0.0.0.0", "Address the API (and health servers) bind to.")
    port: int = _env("PORT", 3000, "API port.")
    health_port: int = _env(
        "PHOENIXQ_HEALTH_PORT", 0, "/healthz and /metrics port of non-API services (0: off)."
    )
    api_token: str = _env("PHOENIXQ_API_TOKEN", "", "Bearer token the API demands (empty: off).")
    api_processes: int = _env(
        "PHOENIXQ_API_PROCESSES", 1,
        "API processes sharing PORT (SO_REUSEPORT, Linux); each one counts its own metrics.",
    )
    api_max_body_bytes: int = _env(
        "PHOENIXQ_API_MAX_BODY_BYTES", 1_048_576, "Largest request body the API accepts."
    )
    handlers: str = _env(
        "PHOENIXQ_HANDLERS", "phoenixq.demo", "Comma-separated handler modules to import."
    )
    queues: str = _env("PHOENIXQ_QUEUES", "default", "Comma-separated queues a worker serves.")
    concurrency: int = _env("PHOENIXQ_CONCURRENCY", 32, "Jobs one worker runs at once.")
    max_attempts: int = _env("PHOENIXQ_MAX_ATTEMPTS", 5, "Default attempts per job.")
    max_attempts_cap: int = _env("PHOENIXQ_MAX_ATTEMPTS_CAP", 100, "Largest maxAttempts.")
    visibility_timeout_ms: int = _env(
        "PHOENIXQ_VISIBILITY_TIMEOUT_MS", 30_000, "Default lease length of a claimed job."
    )
    job_timeout_ms: int = _env(
        "PHOENIXQ_JOB_TIMEOUT_MS", 300_000, "Default execution timeout of a handler."
    )
    backoff_base_ms: int = _env("PHOENIXQ_BACKOFF_BASE_MS", 1000, "First retry delay.")
    backoff_cap_ms: int = _env("PHOENIXQ_BACKOFF_CAP_MS", 300_000, "Largest retry delay.")
    heartbeat_ms: int = _env("PHOENIXQ_HEARTBEAT_MS", 1000, "Worker liveness heartbeat period.")
    worker_ttl_ms: int = _env(
        "PHOENIXQ_WORKER_TTL_MS", 5000, "A worker silent this long is dead; its jobs recovered."
    )
    reaper_interval_ms: int = _env("PHOENIXQ_REAPER_INTERVAL_MS", 500, "Reaper pass period.")
    reaper_batch: int = _env("PHOENIXQ_REAPER_BATCH", 500, "Jobs one reaper script handles.")
    promote_batch: int = _env("PHOENIXQ_PROMOTE_BATCH", 1000, "Jobs one promote script moves.")
    completed_retention_ms: int = _env(
        "PHOENIXQ_COMPLETED_RETENTION_MS", 86_400_000, "How long completed jobs are kept."
    )
    dead_retention_ms: int = _env(
        "PHOENIXQ_DEAD_RETENTION_MS", 604_800_000, "How long dead jobs are kept."
    )
    dead_max: int = _env("PHOENIXQ_DEAD_MAX", 100_000, "Most dead jobs kept per queue.")
    idempotency_ttl_ms: int = _env(
        "PHOENIXQ_IDEMPOTENCY_TTL_MS", 86_400_000, "Enqueue dedup window and done-mark life."
    )
    events_maxlen: int = _env("PHOENIXQ_EVENTS_MAXLEN", 10_000, "Approximate events kept.")
    shutdown_grace_ms: int = _env(
        "PHOENIXQ_SHUTDOWN_GRACE_MS", 30_000, "SIGTERM: time running jobs get to finish."
    )
    log_level: str = _env("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR.")
    log_payloads: bool = _env("PHOENIXQ_LOG_PAYLOADS", False, "Include payloads in log lines.")
    log_job_start: bool = _env(
        "PHOENIXQ_LOG_JOB_START", True,
        "Log `Handling job` when a job starts. Off: one line per job, its outcome.",
    )
    worker_id: str = _env("PHOENIXQ_WORKER_ID", "", "Worker id (empty: host-pid-random).")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then apply ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, type(f.default))
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = (
            "concurrency", "max_attempts", "visibility_timeout_ms", "job_timeout_ms",
            "backoff_base_ms", "heartbeat_ms", "worker_ttl_ms", "reaper_interval_ms",
            "promote_batch", "reaper_batch", "redis_timeout_ms", "api_processes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name} must be positive")
        if self.backoff_cap_ms < self.backoff_base_ms:
            raise ValueError("PHOENIXQ_BACKOFF_CAP_MS must be >= PHOENIXQ_BACKOFF_BASE_MS")
        if self.worker_ttl_ms <= self.heartbeat_ms:
            raise ValueError("PHOENIXQ_WORKER_TTL_MS must exceed PHOENIXQ_HEARTBEAT_MS")
        self._validate_redis()

    def _validate_redis(self) -> None:
        from shared.connection import parse_redis_url  # connection imports this module

        target = parse_redis_url(self.redis_url)
        if self.durable_enqueue_replicas < 0:
            raise ValueError("PHOENIXQ_DURABLE_ENQUEUE_REPLICAS must be >= 0")
        if self.durable_enqueue_replicas and target.kind == "cluster":
            raise ValueError("PHOENIXQ_DURABLE_ENQUEUE_REPLICAS is not supported on Redis "
                             "Cluster (WAIT must share the script's connection)")
        if self.durable_enqueue_replicas and (
            self.durable_enqueue_timeout_ms >= self.redis_timeout_ms
        ):
            raise ValueError("PHOENIXQ_DURABLE_ENQUEUE_TIMEOUT_MS must be below "
                             "PHOENIXQ_REDIS_TIMEOUT_MS")

    @property
    def queue_list(self) -> list[str]:
        return [q.strip() for q in self.queues.split(",") if q.strip()]

    @property
    def handler_modules(self) -> list[str]:
        return [m.strip() for m in self.handlers.split(",") if m.strip()]


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"setting {name}: cannot read {raw!r} as {kind.__name__}") from exc


def describe() -> list[tuple[str, Any, str]]:
    """(environment variable, default, meaning) for every setting — for docs and the CLI."""
    return [
        (f.metadata["env"], f.default, f.metadata["doc"]) for f in dataclasses.fields(Settings)
    ]
