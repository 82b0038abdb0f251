"""HTTP views: parse and validate, call the store, answer JSON."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from services.api.problems import Problem
from services.api.typedefs import settings_key, store_key
from shared.errors import JobNotFound, ValidationError
from shared.jobs import JobSpec

JOB_FIELDS = {
    "type", "payload", "queue", "delayMs", "runAt", "maxAttempts", "timeoutMs",
    "visibilityTimeoutMs", "backoff", "idempotencyKey",
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "Unsupported media type",
                      "Send the body as application/json.")
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(
            400, "invalid_json", "Invalid JSON", f"The body is not valid JSON: {exc}"
        ) from None


def spec_from_body(body: Any, request: web.Request) -> JobSpec:
    """Turn one job object of a request into a resolved ``JobSpec``."""
    settings = request.app[settings_key]
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - JOB_FIELDS)
    if unknown:
        raise ValidationError(unknown[0], "is not a known field")
    if "type" not in body:
        raise ValidationError("type", "is required")
    backoff = body.get("backoff") or {}
    if not isinstance(backoff, dict) or set(backoff) - {"baseMs", "capMs"}:
        raise ValidationError("backoff", "must be an object with baseMs and/or capMs")
    spec = JobSpec(
        type=body["type"],
        payload=body.get("payload"),
        queue=body.get("queue", "default"),
        delay_ms=body.get("delayMs", 0),
        run_at_ms=body.get("runAt", 0),
        max_attempts=body.get("maxAttempts"),
        timeout_ms=body.get("timeoutMs"),
        visibility_timeout_ms=body.get("visibilityTimeoutMs"),
        backoff_base_ms=backoff.get("baseMs"),
        backoff_cap_ms=backoff.get("capMs"),
        idempotency_key=body.get("idempotencyKey", request.headers.get("Idempotency-Key")),
        request_id=request.get("request_id", ""),
        traceparent=request.headers.get("traceparent", ""),
    )
    return spec.resolved(settings)


async def create_job(request: web.Request) -> web.Response:
    """POST /jobs — enqueue one job: 202 queued|scheduled, 200 for a duplicate key."""
    spec = spec_from_body(await read_json(request), request)
    (res,) = await request.app[store_key].enqueue(spec.queue, [spec])
    if res.duplicate:
        return json_response({"jobId": res.job_id, "status": res.state, "duplicate": True})
    return json_response({"jobId": res.job_id, "status": res.state}, status=202)


async def get_job(request: web.Request) -> web.Response:
    """GET /jobs/{jobId} — the job's state, attempts, timestamps, errors and result."""
    job_id = request.match_info["jobId"]
    queue = request.query.get("queue")
    try:
        job = await request.app[store_key].get_job(job_id, queue)
    except JobNotFound:
        raise Problem(404, "job_not_found", "Job not found",
                      f"No job {job_id} exists (or its retention ran out).") from None
    return json_response(job.to_api())


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await request.app[store_key].redis.ping()
    return json_response({"status": "ready"})
