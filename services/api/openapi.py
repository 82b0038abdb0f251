"""The OpenAPI 3.1 document of the API, built from the same limits the code enforces."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import queue_views as qv
from services.api import validation as v
from shared import keys
from shared.jobs import IDEMPOTENCY_KEY_MAX, MAX_DELAY_MS, MAX_TIMEOUT_MS, STATES
from shared.settings import Settings

Schema = dict[str, Any]
PROBLEM = "application/problem+json"

ERRORS = {
    400: ("BadRequest", "Invalid input: the problem's `field` names the offending field."),
    401: ("Unauthorized", "Missing or wrong bearer token (only when a token is configured)."),
    404: ("NotFound", "No such job, queue or route."),
    409: ("Conflict", "The job is not in a state the action applies to (`state` says which)."),
    413: ("TooLarge", "The body is larger than the configured limit."),
    415: ("UnsupportedMediaType", "The body is not `application/json`."),
    429: ("TooManyRequests", "Rate-limited; `Retry-After` says when to try again."),
    503: ("Unavailable", "Redis is unreachable, slow (over 2 s) or out of memory; "
                         "`Retry-After` says when to try again. Nothing was written."),
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _int(low: int, high: int, doc: str = "") -> Schema:
    schema: Schema = {"type": "integer", "minimum": low, "maximum": high}
    return {**schema, "description": doc} if doc else schema


def _obj(props: dict[str, Schema], required: list[str], closed: bool = True) -> Schema:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": not closed}


def _nullable(kind: str) -> Schema:
    return {"type": [kind, "null"]}


def _name(doc: str) -> Schema:
    return {"type": "string", "pattern": keys.NAME_PATTERN, "description": doc}


def job_request(settings: Settings) -> Schema:
    props = {
        "type": _name("Handler name."),
        "payload": {"description": f"Any JSON value, nested at most {v.MAX_DEPTH} levels."},
        "queue": {**_name("Queue name."), "default": "default"},
        "delayMs": _int(0, MAX_DELAY_MS, "Run after this many ms (not with runAt)."),
        "runAt": {"description": "When to run: epoch ms or an RFC 3339 date-time with an "
                                 "offset; a past time means now (not with delayMs).",
                  "oneOf": [_int(0, 2**53), {"type": "string", "format": "date-time"}]},
        "maxAttempts": _int(1, settings.max_attempts_cap,
                            f"Deliveries at most (default {settings.max_attempts})."),
        "timeoutMs": _int(1, MAX_TIMEOUT_MS, "Execution timeout of one attempt."),
        "visibilityTimeoutMs": _int(100, MAX_TIMEOUT_MS, "Lease length of a claim."),
        "backoff": _obj({"baseMs": _int(1, MAX_DELAY_MS), "capMs": _int(1, MAX_DELAY_MS)},
                        []) | {"description": "Retry backoff; capMs must be >= baseMs."},
        "idempotencyKey": {"type": "string", "minLength": 1,
                           "maxLength": IDEMPOTENCY_KEY_MAX,
                           "description": "Enqueue dedup key (printable characters)."},
    }
    return _obj(props, ["type"]) | {"not": {"required": ["delayMs", "runAt"]}}


def _job() -> Schema:
    ints = ("attempts", "maxAttempts", "timeoutMs", "visibilityTimeoutMs", "createdAt",
            "availableAt", "replays")
    props: dict[str, Schema] = {name: {"type": "integer"} for name in ints}
    props |= {name: _nullable("integer") for name in ("startedAt", "finishedAt",
                                                      "leaseUntil")}
    props |= {name: _nullable("string") for name in ("idempotencyKey", "worker",
                                                     "lastError", "requestId")}
    props |= {
        "jobId": {"type": "string"}, "type": {"type": "string"},
        "queue": {"type": "string"}, "status": {"enum": list(STATES)},
        "payload": {}, "result": {},
        "backoff": _obj({"baseMs": {"type": "integer"}, "capMs": {"type": "integer"}},
                        ["baseMs", "capMs"]),
        "history": {"type": "array", "items": {"type": "object"},
                    "description": "Ended attempts: attempt, worker, startedAt, "
                                   "finishedAt, error (last 50)."},
    }
    return _obj(props, sorted(props), closed=False)


def _schemas(settings: Settings) -> dict[str, Schema]:
    counts = {s: {"type": "integer"} for s in ("queued", "scheduled", "processing",
                                               "retrying", "dead", "completed")}
    dead_ints = ("attempts", "maxAttempts", "createdAt", "replays")
    dead_props: dict[str, Schema] = {name: {"type": "integer"} for name in dead_ints}
    dead_props |= {"jobId": {"type": "string"}, "type": {"type": "string"},
                   "status": {"type": "string"}, "diedAt": _nullable("integer"),
                   "lastError": _nullable("string")}
    return {
        "JobRequest": job_request(settings),
        "BatchRequest": _obj({"jobs": {"type": "array", "items": _ref("JobRequest"),
                                       "minItems": 1, "maxItems": v.BATCH_MAX}}, ["jobs"]),
        "EnqueueResult": _obj({"jobId": {"type": "string"},
                               "status": {"enum": [*STATES, "expired"]},
                               "duplicate": {"const": True}}, ["jobId", "status"]),
        "BatchResult": _obj({"jobs": {"type": "array", "items": _ref("EnqueueResult")}},
                            ["jobs"]),
        "Job": _job(),
        "Cancelled": _obj({"jobId": {"type": "string"}, "status": {"const": "cancelled"}},
                          ["jobId", "status"]),
        "Replayed": _obj({"jobId": {"type": "string"}, "status": {"const": "queued"},
                          "replays": {"type": "integer"}}, ["jobId", "status", "replays"]),
        "QueueStats": _obj({"queue": {"type": "string"},
                            "counts": _obj(counts, sorted(counts)),
                            "paused": {"type": "boolean"},
                            "oldestReadyAgeMs": _nullable("integer")},
                           ["queue", "counts", "paused", "oldestReadyAgeMs"]),
        "QueueList": _obj({"queues": {"type": "array", "items": _ref("QueueStats")}},
                          ["queues"]),
        "Paused": _obj({"queue": {"type": "string"}, "paused": {"type": "boolean"}},
                       ["queue", "paused"]),
        "DeadJob": _obj(dead_props, sorted(dead_props)),
        "DeadPage": _obj({"queue": {"type": "string"},
                          "jobs": {"type": "array", "items": _ref("DeadJob")},
                          "nextCursor": _nullable("string")},
                         ["queue", "jobs", "nextCursor"]),
        "ReplayRequest": _obj({
            "ids": {"type": "array", "maxItems": v.REPLAY_IDS_MAX,
                    "items": {"type": "string", "pattern": keys.NAME_PATTERN}},
            "limit": _int(1, qv.REPLAY_MAX, "Oldest dead jobs to replay when no ids are "
                                            f"listed (default {qv.REPLAY_DEFAULT})."),
        }, []),
        "ReplayResult": _obj({k: {"type": "integer"} for k in ("replayed", "skipped",
                                                               "remaining")}
                             | {"queue": {"type": "string"}},
                             ["queue", "replayed", "skipped", "remaining"]),
        "PurgeResult": _obj({"queue": {"type": "string"}, "purged": {"type": "integer"},
                             "remaining": {"type": "integer"}},
                            ["queue", "purged", "remaining"]),
        "Status": _obj({"status": {"type": "string"}}, ["status"]),
        "Problem": _obj({"type": {"type": "string"}, "code": {"type": "string"},
                         "title": {"type": "string"}, "status": {"type": "integer"},
                         "detail": {"type": "string"}, "field": {"type": "string"},
                         "state": {"type": "string"}},
                        ["type", "code", "title", "status", "detail"], closed=False),
    }


# -- operations -------------------------------------------------------------------


def _param(name: str, where: str, schema: Schema, doc: str, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": doc}


JOB_ID = _param("jobId", "path", {"type": "string", "pattern": keys.NAME_PATTERN}, "Job id.")
QUEUE = _param("queue", "path", {"type": "string", "pattern": keys.NAME_PATTERN},
               "Queue name.")
QUEUE_FILTER = _param("queue", "query", {"type": "string", "pattern": keys.NAME_PATTERN},
                      "Look only in this queue (faster with many queues).")


def _json(schema: Schema, doc: str, media: str = "application/json") -> Schema:
    return {"description": doc, "content": {media: {"schema": schema}}}


def _op(tag: str, summary: str, ok: dict[int, Schema], errors: tuple[int, ...],
        params: list[Schema] | None = None, body: Schema | None = None,
        doc: str = "") -> Schema:
    responses: dict[str, Schema] = {str(code): r for code, r in ok.items()}
    for code in errors:
        responses[str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    op: Schema = {"tags": [tag], "summary": summary, "responses": responses}
    if doc:
        op["description"] = doc
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _body(ref: str, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": _ref(ref)}}}


IDEM_HEADER = _param("Idempotency-Key", "header",
                     {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
                     "Same as the body's idempotencyKey (the body wins).")
WRITE = (400, 401, 413, 415, 503)


def _job_paths() -> dict[str, Schema]:
    enqueued = _json(_ref("EnqueueResult"), "Enqueued (status queued or scheduled).")
    duplicate = _json(_ref("EnqueueResult"), "Duplicate idempotency key: the first job.")
    return {
        "/jobs": {"post": _op(
            "jobs", "Enqueue one job", {202: enqueued, 200: duplicate}, WRITE,
            [IDEM_HEADER], _body("JobRequest"),
            "202 with the new job's id; 200 with `duplicate: true` and the first job's id "
            "when the idempotency key was used inside the window.")},
        "/jobs/batch": {"post": _op(
            "jobs", f"Enqueue up to {v.BATCH_MAX} jobs",
            {202: _json(_ref("BatchResult"), "One result per job, in order.")}, WRITE,
            body=_body("BatchRequest"),
            doc="Atomic per queue (one script per queue). One invalid item rejects the "
                "whole batch; the problem's field names it, e.g. `jobs[3].type`.")},
        "/jobs/{jobId}": {"get": _op(
            "jobs", "Get a job", {200: _json(_ref("Job"), "The job.")},
            (400, 401, 404, 503), [JOB_ID, QUEUE_FILTER])},
        "/jobs/{jobId}/cancel": {"post": _op(
            "jobs", "Cancel a scheduled, queued or retrying job",
            {200: _json(_ref("Cancelled"), "Cancelled.")}, (400, 401, 404, 409, 503),
            [JOB_ID, QUEUE_FILTER])},
        "/jobs/{jobId}/replay": {"post": _op(
            "jobs", "Replay a dead job (fresh attempts, history kept)",
            {200: _json(_ref("Replayed"), "Queued again.")}, (400, 401, 404, 409, 503),
            [JOB_ID, QUEUE_FILTER])},
    }


def _queue_paths() -> dict[str, Schema]:
    paused = {200: _json(_ref("Paused"), "The queue's paused flag.")}
    page = [_param("cursor", "query", _int(0, qv.CURSOR_MAX), "nextCursor of the previous "
                                                              "page (default 0)."),
            _param("limit", "query", _int(1, qv.DEAD_PAGE_MAX),
                   f"Page size (default {qv.DEAD_PAGE_DEFAULT}).")]
    confirm = _param("confirm", "query", {"type": "string"}, "Must equal the queue name.",
                     required=True)
    return {
        "/queues": {"get": _op("queues", "Every queue's counts",
                               {200: _json(_ref("QueueList"), "All queues.")}, (401, 503))},
        "/queues/{queue}": {"get": _op(
            "queues", "One queue's counts, oldest ready age, paused flag",
            {200: _json(_ref("QueueStats"), "The queue.")}, (400, 401, 404, 503), [QUEUE])},
        "/queues/{queue}/pause": {"post": _op(
            "queues", "Pause: workers stop claiming", paused, (400, 401, 404, 503),
            [QUEUE])},
        "/queues/{queue}/resume": {"post": _op(
            "queues", "Resume: workers claim again", paused, (400, 401, 404, 503), [QUEUE])},
        "/queues/{queue}/dead": {
            "get": _op("dead-letter queue", "List dead jobs, newest first",
                       {200: _json(_ref("DeadPage"), "A page of the DLQ.")},
                       (400, 401, 404, 503), [QUEUE, *page]),
            "delete": _op("dead-letter queue", "Purge the DLQ (needs ?confirm=<queue>)",
                          {200: _json(_ref("PurgeResult"), "Purged; call again while "
                                                           "remaining > 0.")},
                          (400, 401, 404, 503), [QUEUE, confirm])},
        "/queues/{queue}/dead/replay": {"post": _op(
            "dead-letter queue", "Replay the listed dead jobs, or the oldest ones",
            {200: _json(_ref("ReplayResult"), "Counts; ids no longer dead are skipped.")},
            (400, 401, 404, 413, 415, 429, 503), [QUEUE], _body("ReplayRequest", False),
            f"Rate-limited per queue (burst 5, then 1 per second). Idempotent: a job is "
            f"replayed only while it is dead. Without ids, replays up to `limit` oldest "
            f"(at most {qv.REPLAY_MAX}).")},
    }


def _meta_paths() -> dict[str, Schema]:
    status = {200: _json(_ref("Status"), "OK.")}
    public: Schema = {"security": []}
    return {
        "/healthz": {"get": _op("probes", "The process is alive", status, ()) | public},
        "/readyz": {"get": _op("probes", "Redis is reachable", status, (503,)) | public},
        "/openapi.json": {"get": _op("docs", "This document",
                                     {200: _json({"type": "object"}, "OpenAPI 3.1.")},
                                     (401,))},
        "/docs": {"get": _op("docs", "This document as an HTML page",
                             {200: _json({"type": "string"}, "HTML.", "text/html")},
                             (401,))},
        "/metrics": {"get": _op("probes", "Prometheus metrics of this process",
                                {200: _json({"type": "string"}, "Prometheus text format.",
                                            "text/plain")}, (401,))},
        "/events": {"get": _op(
            "events", "A queue's lifecycle events as Server-Sent Events",
            {200: _json({"type": "string"}, "An endless text/event-stream.",
                        "text/event-stream")}, (400, 401, 404, 503),
            [_param("queue", "query", {"type": "string", "pattern": keys.NAME_PATTERN},
                    "Queue (default `default`, or the job's queue with jobId)."),
             _param("jobId", "query", {"type": "string", "pattern": keys.NAME_PATTERN},
                    "Only this job's events, from the oldest still kept."),
             _param("lastEventId", "query", {"type": "string"},
                    "Resume after this stream entry id (or send Last-Event-ID).")],
            doc="Each event's `id` is its stream entry id; reconnect with Last-Event-ID "
                "to resume. Not bound by the 2 s deadline.")},
    }


def _responses() -> dict[str, Schema]:
    retry = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds."}}
    out: dict[str, Schema] = {}
    for code, (name, doc) in ERRORS.items():
        out[name] = _json(_ref("Problem"), doc, PROBLEM)
        if code in (429, 503):
            out[name]["headers"] = retry
    return out


def for_app(doc: dict[str, Any], app: web.Application) -> dict[str, Any]:
    """``doc`` limited to the paths ``app`` routes (optional routes may be absent)."""
    routed = {route.resource.canonical for route in app.router.routes() if route.resource}
    return {**doc, "paths": {p: item for p, item in doc["paths"].items() if p in routed}}


def build(settings: Settings) -> dict[str, Any]:
    """The document for an app running with ``settings`` (limits and auth included)."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "PhoenixQ API", "version": "1",
                 "description": "Enqueue and inspect jobs, manage queues and the DLQ. "
                                "Errors are RFC 9457 application/problem+json. Bodies up "
                                f"to {settings.api_max_body_bytes} bytes."},
        "paths": _job_paths() | _queue_paths() | _meta_paths(),
        "components": {"schemas": _schemas(settings), "responses": _responses()},
    }
    if settings.api_token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http",
                                                           "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
