"""Request parsing: content type, UTF-8, JSON, nesting, and every job and query field.

The API's rules beyond ``JobSpec.validate``: names must match ``keys.NAME_PATTERN`` in
full, unknown fields are refused, booleans are never integers, payloads nest at most
``MAX_DEPTH`` levels, and a batch holds at most ``BATCH_MAX`` jobs (one invalid item
rejects the whole batch; the problem's ``field`` names the item, e.g. ``jobs[3].type``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from services.api.problems import Problem
from services.api.typedefs import request_id_key, settings_key
from shared import keys
from shared.errors import ValidationError
from shared.jobs import IDEMPOTENCY_KEY_MAX, JobSpec

MAX_DEPTH = 32
BATCH_MAX = 1000
REPLAY_IDS_MAX = 1000
JOB_FIELDS = frozenset({
    "type", "payload", "queue", "delayMs", "runAt", "maxAttempts", "timeoutMs",
    "visibilityTimeoutMs", "backoff", "idempotencyKey",
})
BACKOFF_FIELDS = frozenset({"baseMs", "capMs"})
NAME_RULE = ("must be 1-128 characters of letters, digits and . _ : -, starting with a "
             "letter or digit")
#: RFC 3339 date-time (what OpenAPI's ``format: date-time`` means).
RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


# -- bodies -----------------------------------------------------------------------


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body (415 wrong type, 400 bad UTF-8 or JSON).

    With ``optional``, a request without a body reads as ``{}``.
    """
    if optional and not request.body_exists:
        return {}
    _check_content_type(request)
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "invalid_utf8", "Invalid UTF-8",
                      "The body is not valid UTF-8.") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid_json", "Invalid JSON",
                      f"The body is not valid JSON: {exc}") from None


def _check_content_type(request: web.Request) -> None:
    charset = request.charset
    if request.content_type != "application/json" or charset not in (None, "utf-8", "UTF-8"):
        raise Problem(415, "unsupported_media_type", "Unsupported media type",
                      "Send the body as application/json (UTF-8).",
                      headers={"Accept": "application/json"})


def nesting_depth(value: Any) -> int:
    """Levels of objects/arrays in ``value`` (a scalar is 0, ``{}`` is 1); no recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def as_object(value: Any, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    """``value`` as a JSON object with only ``allowed`` members."""
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationError(_join(field, unknown[0]), "is not a known field")
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and prefix != "body" else name


# -- scalar fields ----------------------------------------------------------------


def check_name(field: str, value: Any) -> str:
    """A queue or type name: ``keys.NAME_PATTERN`` matched in full (no trailing newline)."""
    if not isinstance(value, str) or not keys.NAME_RE.fullmatch(value):
        raise ValidationError(field, NAME_RULE)
    return value


def check_job_id(value: str) -> str:
    """Job ids use the same safe alphabet as names (API ids are UUIDs)."""
    if not keys.NAME_RE.fullmatch(value):
        raise ValidationError("jobId", "is not a valid job id")
    return value


def opt_int(body: dict[str, Any], name: str, field: str) -> int | None:
    """An optional integer member; booleans and fractions are refused, 5.0 reads as 5."""
    if name not in body:
        return None
    value = body[name]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be an integer")
    return value


def run_at_ms(body: dict[str, Any], field: str) -> int:
    """``runAt``: epoch milliseconds or an RFC 3339 date-time with an offset; 0 if absent."""
    value = body.get("runAt")
    if value is None and "runAt" not in body:
        return 0
    if isinstance(value, str):
        return _parse_datetime(value, field)
    number = opt_int(body, "runAt", field)
    assert number is not None
    return number


def _parse_datetime(text: str, field: str) -> int:
    if not RFC3339_RE.fullmatch(text):
        raise ValidationError(field, "must be epoch milliseconds or an RFC 3339 date-time "
                                     "with an offset, e.g. 2030-01-01T09:00:00Z")
    normal = text.upper().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError:
        raise ValidationError(field, "is not a valid date-time") from None
    return max(1, int(moment.timestamp() * 1000))  # a past time means "now"


def idempotency_key(body: dict[str, Any], request: web.Request, field: str) -> str | None:
    """The body's ``idempotencyKey``, else the ``Idempotency-Key`` header (POST /jobs only).

    Both are validated when given; the body's key wins.
    """
    header = request.headers.get("Idempotency-Key") if request.path == "/jobs" else None
    if header is not None:
        _check_key(header, "Idempotency-Key")
    if "idempotencyKey" not in body:
        return header
    return _check_key(body["idempotencyKey"], field)


def _check_key(key: Any, field: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise ValidationError(field, f"must be a string of 1 to {IDEMPOTENCY_KEY_MAX} "
                                     "characters")
    return key


# -- jobs -------------------------------------------------------------------------


def job_spec(body: Any, request: web.Request, prefix: str = "") -> JobSpec:
    """One job object of a request as a resolved ``JobSpec``; field names get ``prefix``."""
    try:
        return _job_spec(body, request, prefix)
    except ValidationError as exc:
        if prefix and not exc.field.startswith(prefix):
            raise ValidationError(f"{prefix}.{exc.field}", exc.message) from None
        raise


def _job_spec(body: Any, request: web.Request, prefix: str) -> JobSpec:
    body = as_object(body, prefix or "body", JOB_FIELDS)
    if "type" not in body:
        raise ValidationError("type", "is required")
    if "delayMs" in body and "runAt" in body:
        raise ValidationError("runAt", "give delayMs or runAt, not both")
    if nesting_depth(body.get("payload")) > MAX_DEPTH:
        raise ValidationError("payload", f"is nested deeper than {MAX_DEPTH} levels")
    backoff = as_object(body.get("backoff", {}), "backoff", BACKOFF_FIELDS)
    spec = JobSpec(
        type=check_name("type", body["type"]),
        payload=body.get("payload"),
        queue=check_name("queue", body.get("queue", "default")),
        delay_ms=opt_int(body, "delayMs", "delayMs") or 0,
        run_at_ms=run_at_ms(body, "runAt"),
        max_attempts=opt_int(body, "maxAttempts", "maxAttempts"),
        timeout_ms=opt_int(body, "timeoutMs", "timeoutMs"),
        visibility_timeout_ms=opt_int(body, "visibilityTimeoutMs", "visibilityTimeoutMs"),
        backoff_base_ms=opt_int(backoff, "baseMs", "backoff.baseMs"),
        backoff_cap_ms=opt_int(backoff, "capMs", "backoff.capMs"),
        idempotency_key=idempotency_key(body, request, "idempotencyKey"),
        request_id=request.get(request_id_key, ""),
        traceparent=request.headers.get("traceparent", "")[:128],
    )
    return spec.resolved(request.app[settings_key])


def batch_specs(body: Any, request: web.Request) -> list[JobSpec]:
    """``{"jobs": [...]}``: 1 to ``BATCH_MAX`` jobs; any invalid item rejects the batch."""
    body = as_object(body, "body", frozenset({"jobs"}))
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= BATCH_MAX:
        raise ValidationError("jobs", f"must be an array of 1 to {BATCH_MAX} jobs")
    return [job_spec(item, request, f"jobs[{i}]") for i, item in enumerate(jobs)]


# -- queries ----------------------------------------------------------------------


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A decimal integer query parameter within [low, high]."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise ValidationError(name, "must be a non-negative integer")
    value = int(raw)
    if not low <= value <= high:
        raise ValidationError(name, f"must be between {low} and {high}")
    return value


def replay_request(body: Any) -> tuple[list[str], int | None]:
    """The optional body of a DLQ replay: ``{"ids": [...]}`` and/or ``{"limit": n}``."""
    body = as_object(body, "body", frozenset({"ids", "limit"}))
    ids = body.get("ids", [])
    if not isinstance(ids, list) or len(ids) > REPLAY_IDS_MAX:
        raise ValidationError("ids", f"must be an array of at most {REPLAY_IDS_MAX} job ids")
    for i, job_id in enumerate(ids):
        if not isinstance(job_id, str) or not keys.NAME_RE.fullmatch(job_id):
            raise ValidationError(f"ids[{i}]", "is not a valid job id")
    return list(dict.fromkeys(ids)), opt_int(body, "limit", "limit")
