"""The job model: what an enqueue asks for (``JobSpec``) and what Redis holds (``Job``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared import keys
from shared.errors import ValidationError
from shared.settings import Settings

STATES = ("scheduled", "queued", "processing", "retrying", "completed", "dead", "cancelled")
IDEMPOTENCY_KEY_MAX = 200
MAX_DELAY_MS = 366 * 86_400_000  # a year and a day
MAX_TIMEOUT_MS = 7 * 86_400_000


@dataclass(slots=True)
class JobSpec:
    """A request to enqueue one job. Unset numbers take the settings' defaults."""

    type: str
    payload: Any = None
    queue: str = "default"
    delay_ms: int = 0
    run_at_ms: int = 0
    max_attempts: int | None = None
    timeout_ms: int | None = None
    visibility_timeout_ms: int | None = None
    backoff_base_ms: int | None = None
    backoff_cap_ms: int | None = None
    idempotency_key: str | None = None
    request_id: str = ""
    traceparent: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def resolved(self, settings: Settings) -> JobSpec:
        """Fill every unset number with the settings' default, validate, return ``self``.

        Raises ``ValidationError``. Resolving twice is harmless.
        """
        if self.max_attempts is None:
            self.max_attempts = settings.max_attempts
        if self.timeout_ms is None:
            self.timeout_ms = settings.job_timeout_ms
        if self.visibility_timeout_ms is None:
            self.visibility_timeout_ms = settings.visibility_timeout_ms
        if self.backoff_base_ms is None:
            self.backoff_base_ms = settings.backoff_base_ms
        if self.backoff_cap_ms is None:
            self.backoff_cap_ms = settings.backoff_cap_ms
        self.validate(settings)
        return self

    def validate(self, settings: Settings) -> None:
        validate_name("type", self.type)
        validate_name("queue", self.queue)
        _int_range("delayMs", self.delay_ms, 0, MAX_DELAY_MS)
        _int_range("runAt", self.run_at_ms, 0, 2**53)
        _int_range("maxAttempts", self.max_attempts, 1, settings.max_attempts_cap)
        _int_range("timeoutMs", self.timeout_ms, 1, MAX_TIMEOUT_MS)
        _int_range("visibilityTimeoutMs", self.visibility_timeout_ms, 100, MAX_TIMEOUT_MS)
        _int_range("backoff.baseMs", self.backoff_base_ms, 1, MAX_DELAY_MS)
        _int_range("backoff.capMs", self.backoff_cap_ms, 1, MAX_DELAY_MS)
        if self.backoff_cap_ms < self.backoff_base_ms:  # type: ignore[operator]
            raise ValidationError("backoff.capMs", "must be at least backoff.baseMs")
        if self.idempotency_key is not None:
            key = self.idempotency_key
            if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
                raise ValidationError(
                    "idempotencyKey", f"must be a string of 1 to {IDEMPOTENCY_KEY_MAX} characters"
                )
            if not key.isprintable():
                raise ValidationError("idempotencyKey", "must not contain control characters")
        try:
            orjson.dumps(self.payload)
        except TypeError as exc:
            raise ValidationError("payload", f"is not JSON-serialisable: {exc}") from exc

    def to_script(self) -> dict[str, Any]:
        """The job as the enqueue script reads it (see enqueue.lua's header)."""
        return {
            "id": self.id,
            "type": self.type,
            "payload": orjson.dumps(self.payload).decode(),
            "max_attempts": self.max_attempts,
            "timeout_ms": self.timeout_ms,
            "vt_ms": self.visibility_timeout_ms,
            "backoff_base_ms": self.backoff_base_ms,
            "backoff_cap_ms": self.backoff_cap_ms,
            "idem_key": self.idempotency_key or "",
            "delay_ms": self.delay_ms,
            "run_at": self.run_at_ms,
            "request_id": self.request_id,
            "traceparent": self.traceparent,
        }


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def validate_name(field_name: str, value: object) -> None:
    """Queue and type names must match ``keys.NAME_PATTERN``."""
    if not isinstance(value, str) or not keys.NAME_RE.fullmatch(value):
        raise ValidationError(
            field_name,
            "must be 1-128 characters of letters, digits and . _ : -, starting with a "
            "letter or digit",
        )


def _int_range(field_name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field_name, "must be an integer")
    if not low <= value <= high:
        raise ValidationError(field_name, f"must be between {low} and {high}")


@dataclass(slots=True)
class Job:
    """A job as stored in its Redis hash; handlers receive one of these."""

    id: str
    type: str
    queue: str
    payload: Any
    state: str
    attempt: int
    max_attempts: int
    timeout_ms: int
    visibility_timeout_ms: int
    backoff_base_ms: int
    backoff_cap_ms: int
    idempotency_key: str | None
    created_at: int
    available_at: int
    started_at: int | None
    finished_at: int | None
    token: str
    worker: str
    last_error: str | None
    history: list[dict[str, Any]]
    result: Any
    request_id: str
    traceparent: str
    replays: int
    lease_until: int | None

    @classmethod
    def from_claim(cls, values: list[bytes | None]) -> Job:
        """A job from the claim script's reply: the ``CLAIM_FIELDS`` values, in order.

        Built field by field (the worker's hot path), not through a dict.
        """
        (id_, type_, queue, payload, state, attempt, max_attempts, timeout_ms, vt_ms,
         base, cap, idem, created, available, started, token, worker, request_id,
         traceparent, replays, lease_until) = values
        return cls(
            id=id_.decode(), type=type_.decode(), queue=queue.decode(),  # type: ignore[union-attr]
            payload=orjson.loads(payload) if payload else None,
            state=state.decode(), attempt=int(attempt), max_attempts=int(max_attempts),  # type: ignore[union-attr,arg-type]
            timeout_ms=int(timeout_ms), visibility_timeout_ms=int(vt_ms),  # type: ignore[arg-type]
            backoff_base_ms=int(base), backoff_cap_ms=int(cap),  # type: ignore[arg-type]
            idempotency_key=idem.decode() if idem else None,
            created_at=int(created or 0), available_at=int(available or 0),
            started_at=_opt_int(started), finished_at=None,
            token=token.decode(), worker=worker.decode() if worker else "",  # type: ignore[union-attr]
            last_error=None, history=[], result=None,
            request_id=request_id.decode() if request_id else "",
            traceparent=traceparent.decode() if traceparent else "",
            replays=int(replays or 0), lease_until=_opt_int(lease_until),
        )

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | dict[str, str]) -> Job:
        h = {_s(k): _s(v) for k, v in raw.items()}
        return cls(
            id=h["id"],
            type=h.get("type", ""),
            queue=h.get("queue", ""),
            payload=_json(h.get("payload")),
            state=h.get("state", ""),
            attempt=int(h.get("attempt") or 0),
            max_attempts=int(h.get("max_attempts") or 1),
            timeout_ms=int(h.get("timeout_ms") or 0),
            visibility_timeout_ms=int(h.get("vt_ms") or 0),
            backoff_base_ms=int(h.get("backoff_base_ms") or 0),
            backoff_cap_ms=int(h.get("backoff_cap_ms") or 0),
            idempotency_key=h.get("idem_key") or None,
            created_at=int(h.get("created_at") or 0),
            available_at=int(h.get("available_at") or 0),
            started_at=_opt_int(h.get("started_at")),
            finished_at=_opt_int(h.get("finished_at")),
            token=h.get("token", "0"),
            worker=h.get("worker", ""),
            last_error=h.get("last_error") or None,
            history=_json(h.get("history")) or [],
            result=_json(h.get("result")),
            request_id=h.get("request_id", ""),
            traceparent=h.get("traceparent", ""),
            replays=int(h.get("replays") or 0),
            lease_until=_opt_int(h.get("lease_until")),
        )

    def to_api(self) -> dict[str, Any]:
        """The job as the HTTP API and the CLI show it (the seed's camelCase names)."""
        return {
            "jobId": self.id,
            "type": self.type,
            "queue": self.queue,
            "status": self.state,
            "payload": self.payload,
            "attempts": self.attempt,
            "maxAttempts": self.max_attempts,
            "timeoutMs": self.timeout_ms,
            "visibilityTimeoutMs": self.visibility_timeout_ms,
            "backoff": {"baseMs": self.backoff_base_ms, "capMs": self.backoff_cap_ms},
            "idempotencyKey": self.idempotency_key,
            "createdAt": self.created_at,
            "availableAt": self.available_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "leaseUntil": self.lease_until,
            "worker": self.worker or None,
            "lastError": self.last_error,
            "history": self.history,
            "result": self.result,
            "replays": self.replays,
            "requestId": self.request_id or None,
        }


#: The job hash fields a worker needs; the claim script returns exactly these.
CLAIM_FIELDS = (
    "id", "type", "queue", "payload", "state", "attempt", "max_attempts", "timeout_ms",
    "vt_ms", "backoff_base_ms", "backoff_cap_ms", "idem_key", "created_at", "available_at",
    "started_at", "token", "worker", "request_id", "traceparent", "replays", "lease_until",
)
CLAIM_FIELDS_ARG = ",".join(CLAIM_FIELDS)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _json(value: str | None) -> Any:
    return orjson.loads(value) if value else None


def _opt_int(value: str | bytes | None) -> int | None:
    return int(value) if value else None
