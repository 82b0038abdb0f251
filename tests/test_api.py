"""The HTTP API against the session's real Redis: every route, happy path and errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient

from services.api.app import create_app
from shared import keys
from shared.jobs import JobSpec
from shared.settings import Settings
from shared.store import Store

JSON = {"Content-Type": "application/json"}
PROBLEM = "application/problem+json"


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def post(api: TestClient, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    resp = await api.post(path, json=body, **kw)
    return resp.status, await resp.json(content_type=None)


async def expect_problem(resp: Any, status: int, code: str, field: str | None = None) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=None)
    assert body["code"] == code and body["status"] == status
    assert body["type"].endswith(code) and body["title"] and body["detail"]
    if field is not None:
        assert body["field"] == field
    return body


async def make_dead(store: Store, queue: str, n: int, error: str = "boom") -> list[str]:
    """Enqueue ``n`` one-attempt jobs, claim them and fail them into the DLQ."""
    specs = [JobSpec(type="t", queue=queue, max_attempts=1).resolved(store.settings)
             for _ in range(n)]
    await store.enqueue(queue, specs)
    claimed = await store.claim(queue, "w1", more=n)
    for job in claimed.jobs:
        await store.fail(job, "w1", f"{error} {job.id}")
    return [s.id for s in specs]


# -- POST /jobs ---------------------------------------------------------------------


async def test_enqueue_returns_202_and_stores_the_job(api: TestClient, queue: str) -> None:
    resp = await api.post("/jobs", json={"type": "email.send", "queue": queue,
                                         "payload": {"to": "a@b.c"}},
                          headers={"X-Request-Id": "req-123"})
    assert resp.status == 202
    body = await resp.json()
    assert body == {"jobId": body["jobId"], "status": "queued"}
    assert resp.headers["Location"] == f"/jobs/{body['jobId']}"
    assert resp.headers["X-Request-Id"] == "req-123"
    job = await (await api.get(f"/jobs/{body['jobId']}")).json()
    assert job["status"] == "queued" and job["payload"] == {"to": "a@b.c"}
    assert job["requestId"] == "req-123" and job["attempts"] == 0
    assert {"createdAt", "availableAt", "startedAt", "finishedAt", "lastError", "history",
            "result"} <= set(job)


@pytest.mark.parametrize("when", [{"delayMs": 60_000}, {"runAt": "2999-01-01T00:00:00Z"},
                                  {"runAt": 32_503_680_000_000}])
async def test_delayed_jobs_are_scheduled(api: TestClient, queue: str, when: dict) -> None:
    status, body = await post(api, "/jobs", {"type": "t", "queue": queue, **when})
    assert (status, body["status"]) == (202, "scheduled")


@pytest.mark.parametrize("run_at", ["2001-01-01T00:00:00+02:00", 1000, 0])
async def test_a_past_run_at_means_now(api: TestClient, queue: str, run_at: Any) -> None:
    status, body = await post(api, "/jobs", {"type": "t", "queue": queue, "runAt": run_at})
    assert (status, body["status"]) == (202, "queued")


async def test_integer_valued_floats_are_integers(api: TestClient, queue: str) -> None:
    status, body = await post(api, "/jobs", {"type": "t", "queue": queue, "maxAttempts": 3.0})
    assert status == 202
    job = await (await api.get(f"/jobs/{body['jobId']}")).json()
    assert job["maxAttempts"] == 3


async def test_idempotency_key_in_body_or_header(api: TestClient, queue: str) -> None:
    first = await post(api, "/jobs", {"type": "t", "queue": queue, "idempotencyKey": "k"})
    again = await post(api, "/jobs", {"type": "t", "queue": queue},
                       headers={"Idempotency-Key": "k"})
    assert first[0] == 202 and "duplicate" not in first[1]
    assert again == (200, {"jobId": first[1]["jobId"], "status": "queued", "duplicate": True})
    other = await post(api, "/jobs", {"type": "t", "queue": queue},
                       headers={"Idempotency-Key": "k2"})
    assert other[0] == 202 and other[1]["jobId"] != first[1]["jobId"]


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


INVALID_JOBS = [
    ({}, "type"),
    ({"type": "a b"}, "type"),
    ({"type": "a\n"}, "type"),
    ({"type": 5}, "type"),
    ({"type": "t", "queue": "{other}"}, "queue"),
    ({"type": "t", "queue": "q*"}, "queue"),
    ({"type": "t", "queue": "x" * 129}, "queue"),
    ({"type": "t", "queue": None}, "queue"),
    ({"type": "t", "extra": 1}, "extra"),
    ({"type": "t", "delayMs": -1}, "delayMs"),
    ({"type": "t", "delayMs": 1.5}, "delayMs"),
    ({"type": "t", "maxAttempts": 0}, "maxAttempts"),
    ({"type": "t", "maxAttempts": 101}, "maxAttempts"),
    ({"type": "t", "maxAttempts": True}, "maxAttempts"),
    ({"type": "t", "maxAttempts": None}, "maxAttempts"),
    ({"type": "t", "timeoutMs": "5"}, "timeoutMs"),
    ({"type": "t", "visibilityTimeoutMs": 99}, "visibilityTimeoutMs"),
    ({"type": "t", "backoff": {"baseMs": 10, "capMs": 5}}, "backoff.capMs"),
    ({"type": "t", "backoff": {"jitter": 1}}, "backoff.jitter"),
    ({"type": "t", "backoff": [1]}, "backoff"),
    ({"type": "t", "runAt": "tomorrow"}, "runAt"),
    ({"type": "t", "runAt": "2030-01-01T00:00:00"}, "runAt"),
    ({"type": "t", "runAt": -5}, "runAt"),
    ({"type": "t", "runAt": 1, "delayMs": 1}, "runAt"),
    ({"type": "t", "idempotencyKey": ""}, "idempotencyKey"),
    ({"type": "t", "idempotencyKey": None}, "idempotencyKey"),
    ({"type": "t", "idempotencyKey": "a\u0000b"}, "idempotencyKey"),
    ({"type": "t", "idempotencyKey": "k" * 201}, "idempotencyKey"),
    ({"type": "t", "payload": _deep(33)}, "payload"),
    ([{"type": "t"}], "body"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_JOBS)
async def test_invalid_jobs_are_400_naming_the_field(
    api: TestClient, body: Any, field: str
) -> None:
    await expect_problem(await api.post("/jobs", json=body), 400, "validation_error", field)


async def test_payload_nesting_up_to_the_limit_is_fine(api: TestClient, queue: str) -> None:
    status, _ = await post(api, "/jobs", {"type": "t", "queue": queue, "payload": _deep(32)})
    assert status == 202


@pytest.mark.parametrize("body", [{"type": "t"}, {"type": "t", "idempotencyKey": "ok"}])
async def test_bad_idempotency_header_is_400(api: TestClient, body: dict) -> None:
    resp = await api.post("/jobs", json=body, headers={"Idempotency-Key": "x" * 300})
    await expect_problem(resp, 400, "validation_error", "Idempotency-Key")


@pytest.mark.parametrize(("raw", "headers", "status", "code"), [
    (b'{"type": "t"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    (b'{"type": "t"}', {}, 415, "unsupported_media_type"),
    (b'{"type": "t"}', {"Content-Type": "application/json; charset=latin-1"}, 415,
     "unsupported_media_type"),
    (b'{"type": ', JSON, 400, "invalid_json"),
    (b"", JSON, 400, "invalid_json"),
    (b'{"type": "\xff\xfe"}', JSON, 400, "invalid_utf8"),
    (b"[" * 5000 + b"]" * 5000, JSON, 400, "invalid_json"),
])
async def test_malformed_bodies(
    api: TestClient, raw: bytes, headers: dict, status: int, code: str
) -> None:
    await expect_problem(await api.post("/jobs", data=raw, headers=headers), status, code)


async def test_body_over_the_limit_is_413_problem(aiohttp_client: Any, settings: Settings) -> None:
    small = dataclasses.replace(settings, api_max_body_bytes=1000)
    api = await aiohttp_client(create_app(small))
    body = {"type": "t", "payload": "x" * 2000}
    await expect_problem(await api.post("/jobs", json=body), 413, "body_too_large")
    chunks = (b'{"type": "t", "payload": "' + b"x" * 2000 + b'"}',)

    async def stream() -> Any:
        for chunk in chunks:
            yield chunk

    resp = await api.post("/jobs", data=stream(), headers=JSON)  # chunked, no length
    await expect_problem(resp, 413, "body_too_large")


# -- POST /jobs/batch ---------------------------------------------------------------


async def test_batch_enqueues_per_queue_in_order(api: TestClient, queue: str,
                                                 store: Store) -> None:
    other = f"{queue}-b"
    jobs = [{"type": "t", "queue": queue}, {"type": "t", "queue": other, "delayMs": 60_000},
            {"type": "t", "queue": queue, "idempotencyKey": "same"},
            {"type": "t", "queue": queue, "idempotencyKey": "same"}]
    status, body = await post(api, "/jobs/batch", {"jobs": jobs})
    assert status == 202
    results = body["jobs"]
    assert [r["status"] for r in results] == ["queued", "scheduled", "queued", "queued"]
    assert results[3] == {**results[2], "duplicate": True}
    assert (await store.queue_stats(queue)).queued == 2
    assert (await store.queue_stats(other)).scheduled == 1


async def test_one_invalid_item_rejects_the_whole_batch(
    api: TestClient, queue: str, store: Store
) -> None:
    jobs = [{"type": "t", "queue": queue}, {"type": "t", "queue": queue, "maxAttempts": 0}]
    resp = await api.post("/jobs/batch", json={"jobs": jobs})
    await expect_problem(resp, 400, "validation_error", "jobs[1].maxAttempts")
    resp = await api.post("/jobs/batch", json={"jobs": [{"type": "t", "queue": queue}, {}]})
    await expect_problem(resp, 400, "validation_error", "jobs[1].type")
    assert (await store.queue_stats(queue)).queued == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"jobs": []}, "jobs"), ({"jobs": {}}, "jobs"), ({}, "jobs"),
    ({"jobs": [{"type": "t"}] * 1001}, "jobs"), ({"jobs": [{"type": "t"}], "x": 1}, "x"),
    ({"jobs": [5]}, "jobs[0]"),
])
async def test_batch_shape_errors(api: TestClient, body: Any, field: str) -> None:
    await expect_problem(await api.post("/jobs/batch", json=body), 400, "validation_error",
                         field)


async def test_batch_of_the_maximum_size(api: TestClient, queue: str, store: Store) -> None:
    status, body = await post(api, "/jobs/batch",
                              {"jobs": [{"type": "t", "queue": queue}] * 1000})
    assert status == 202 and len(body["jobs"]) == 1000
    assert (await store.queue_stats(queue)).queued == 1000


# -- GET /jobs/{id}, cancel, replay ------------------------------------------------


async def test_get_job_errors(api: TestClient, queue: str) -> None:
    await expect_problem(await api.get("/jobs/nope"), 404, "job_not_found", "jobId")
    await expect_problem(await api.get(f"/jobs/nope?queue={queue}"), 404, "job_not_found")
    await expect_problem(await api.get("/jobs/a*b"), 400, "validation_error", "jobId")
    await expect_problem(await api.get("/jobs/x?queue=a%7Bb"), 400, "validation_error",
                         "queue")


async def test_get_job_shows_attempt_history_and_last_error(
    api: TestClient, queue: str, store: Store
) -> None:
    (job_id,) = await make_dead(store, queue, 1)
    job = await (await api.get(f"/jobs/{job_id}?queue={queue}")).json()
    assert job["status"] == "dead" and job["attempts"] == 1
    assert job["lastError"] == f"boom {job_id}"
    assert job["history"][0]["error"] == f"boom {job_id}"
    assert job["startedAt"] and job["finishedAt"]


async def test_cancel_a_queued_job_then_409(api: TestClient, queue: str) -> None:
    _, created = await post(api, "/jobs", {"type": "t", "queue": queue})
    job_id = created["jobId"]
    assert await post(api, f"/jobs/{job_id}/cancel") == (
        200, {"jobId": job_id, "status": "cancelled"})
    body = await expect_problem(await api.post(f"/jobs/{job_id}/cancel"), 409, "invalid_state")
    assert body["state"] == "cancelled" and "cancelled" in body["detail"]
    await expect_problem(await api.post("/jobs/nope/cancel"), 404, "job_not_found")


async def test_cancel_scheduled_job(api: TestClient, queue: str, store: Store) -> None:
    _, created = await post(api, "/jobs", {"type": "t", "queue": queue, "delayMs": 60_000})
    status, _ = await post(api, f"/jobs/{created['jobId']}/cancel")
    assert status == 200 and (await store.queue_stats(queue)).scheduled == 0


async def test_cancel_a_dead_job_is_409(api: TestClient, queue: str, store: Store) -> None:
    (job_id,) = await make_dead(store, queue, 1)
    body = await expect_problem(await api.post(f"/jobs/{job_id}/cancel"), 409, "invalid_state")
    assert body["state"] == "dead"


async def test_replay_a_dead_job(api: TestClient, queue: str, store: Store) -> None:
    (job_id,) = await make_dead(store, queue, 1)
    status, body = await post(api, f"/jobs/{job_id}/replay")
    assert (status, body) == (200, {"jobId": job_id, "status": "queued", "replays": 1})
    job = await (await api.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "queued" and job["attempts"] == 0 and len(job["history"]) == 1
    body = await expect_problem(await api.post(f"/jobs/{job_id}/replay"), 409,
                                "invalid_state")
    assert body["state"] == "queued"
    await expect_problem(await api.post("/jobs/nope/replay"), 404, "job_not_found")


# -- queues ---------------------------------------------------------------------------


async def test_queue_stats(api: TestClient, queue: str, store: Store) -> None:
    await make_dead(store, queue, 1)
    await post(api, "/jobs/batch", {"jobs": [{"type": "t", "queue": queue},
                                             {"type": "t", "queue": queue, "delayMs": 9000}]})
    stats = await (await api.get(f"/queues/{queue}")).json()
    assert stats["counts"] == {"queued": 1, "scheduled": 1, "processing": 0, "retrying": 0,
                               "dead": 1, "completed": 0}
    assert stats["paused"] is False and stats["oldestReadyAgeMs"] >= 0
    listed = await (await api.get("/queues")).json()
    assert stats["queue"] in [q["queue"] for q in listed["queues"]]


async def test_queue_errors(api: TestClient, queue: str) -> None:
    await expect_problem(await api.get(f"/queues/{queue}"), 404, "queue_not_found", "queue")
    await expect_problem(await api.get("/queues/a*"), 400, "validation_error", "queue")
    await expect_problem(await api.get(f"/queues/{queue}/dead"), 404, "queue_not_found")


async def test_pause_and_resume(api: TestClient, queue: str, store: Store) -> None:
    await post(api, "/jobs", {"type": "t", "queue": queue})
    assert await post(api, f"/queues/{queue}/pause") == (200, {"queue": queue, "paused": True})
    assert (await (await api.get(f"/queues/{queue}")).json())["paused"] is True
    assert (await store.claim(queue, "w1", more=1)).paused
    assert await post(api, f"/queues/{queue}/resume") == (200, {"queue": queue,
                                                                "paused": False})
    assert len((await store.claim(queue, "w1", more=1)).jobs) == 1
    await expect_problem(await api.post("/queues/a%20b/pause"), 400, "validation_error")


# -- dead-letter queue ---------------------------------------------------------------


async def test_dead_list_is_paginated_newest_first(api: TestClient, queue: str,
                                                   store: Store) -> None:
    await make_dead(store, queue, 3)
    first = await (await api.get(f"/queues/{queue}/dead?limit=2")).json()
    assert len(first["jobs"]) == 2 and first["nextCursor"] == "2"
    rest = await (await api.get(f"/queues/{queue}/dead?limit=2&cursor=2")).json()
    assert len(rest["jobs"]) == 1 and rest["nextCursor"] is None
    items = first["jobs"] + rest["jobs"]
    assert [i["diedAt"] for i in items] == sorted((i["diedAt"] for i in items), reverse=True)
    assert all(i["lastError"] == f"boom {i['jobId']}" for i in items)
    for bad in ("limit=0", "limit=501", "limit=x", "cursor=-1"):
        await expect_problem(await api.get(f"/queues/{queue}/dead?{bad}"), 400,
                             "validation_error", bad.split("=")[0])


async def test_replay_the_dlq_all_and_by_ids(api: TestClient, queue: str,
                                             store: Store) -> None:
    ids = await make_dead(store, queue, 4)
    status, body = await post(api, f"/queues/{queue}/dead/replay", {"ids": ids[:1]})
    assert (status, body) == (200, {"queue": queue, "replayed": 1, "skipped": 0,
                                    "remaining": 3})
    again = await post(api, f"/queues/{queue}/dead/replay", {"ids": ids[:1]})
    assert again[1]["replayed"] == 0 and again[1]["skipped"] == 1  # idempotent
    resp = await api.post(f"/queues/{queue}/dead/replay")  # no body: all
    assert (await resp.json())["replayed"] == 3
    assert (await store.queue_stats(queue)).queued == 4


async def test_replay_all_with_a_limit(api: TestClient, queue: str, store: Store) -> None:
    await make_dead(store, queue, 3)
    status, body = await post(api, f"/queues/{queue}/dead/replay", {"limit": 2})
    assert (status, body["replayed"], body["remaining"]) == (200, 2, 1)


async def test_dlq_replay_is_rate_limited(api: TestClient, queue: str, store: Store) -> None:
    await make_dead(store, queue, 1)
    statuses = [(await api.post(f"/queues/{queue}/dead/replay")).status for _ in range(5)]
    assert statuses == [200] * 5
    resp = await api.post(f"/queues/{queue}/dead/replay")
    await expect_problem(resp, 429, "rate_limited")
    assert int(resp.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(("body", "field"), [
    ({"ids": "x"}, "ids"), ({"ids": ["a*"]}, "ids[0]"), ({"limit": 0}, "limit"),
    ({"limit": 10_001}, "limit"), ({"limit": True}, "limit"), ({"nope": 1}, "nope"),
    (None, "body"), ([], "body"),
])
async def test_dlq_replay_errors(api: TestClient, queue: str, store: Store, body: Any,
                                 field: str) -> None:
    await make_dead(store, queue, 1)
    resp = await api.post(f"/queues/{queue}/dead/replay", data=orjson.dumps(body),
                          headers=JSON)
    await expect_problem(resp, 400, "validation_error", field)


async def test_purge_needs_confirmation_and_deletes_in_batches(
    api: TestClient, queue: str, store: Store
) -> None:
    ids = await make_dead(store, queue, 1100)
    path = f"/queues/{queue}/dead"
    await expect_problem(await api.delete(path), 400, "confirmation_required", "confirm")
    await expect_problem(await api.delete(f"{path}?confirm=yes"), 400, "confirmation_required")
    resp = await api.delete(f"{path}?confirm={queue}")
    assert await resp.json() == {"queue": queue, "purged": 1100, "remaining": 0}
    assert await store.redis.exists(keys.dead(queue), *(keys.job(queue, i) for i in ids)) == 0


# -- probes, docs, auth, request ids, routing --------------------------------------


async def test_probes(api: TestClient) -> None:
    assert await (await api.get("/healthz")).json() == {"status": "ok"}
    assert await (await api.get("/readyz")).json() == {"status": "ready"}


async def test_openapi_and_docs(api: TestClient) -> None:
    doc = await (await api.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    routes = {(r.method.lower(), r.resource.canonical) for r in api.app.router.routes()
              if r.method != "HEAD"}
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert documented == routes
    page = await api.get("/docs")
    assert page.content_type == "text/html"
    html = await page.text()
    assert all(path in html for path in doc["paths"]) and "<script" not in html


async def test_routing_errors_are_problems(api: TestClient) -> None:
    await expect_problem(await api.get("/nowhere"), 404, "not_found")
    resp = await api.put("/jobs")
    await expect_problem(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"


async def test_request_id_is_echoed_or_made(api: TestClient) -> None:
    given = await api.get("/healthz", headers={"X-Request-Id": "abc-1"})
    assert given.headers["X-Request-Id"] == "abc-1"
    unsafe = await api.get("/healthz", headers={"X-Request-Id": "bad id\u00e9"})
    assert unsafe.headers["X-Request-Id"] != "bad id\u00e9"
    assert len(unsafe.headers["X-Request-Id"]) == 32


@pytest.fixture
async def secured(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(dataclasses.replace(settings,
                                                               api_token="s3cret-token")))


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer s3cret-toke",
                                  "Basic s3cret-token", "s3cret-token"])
async def test_auth_rejects_without_the_right_token(secured: TestClient, auth: str | None,
                                                    queue: str) -> None:
    headers = {"Authorization": auth} if auth else {}
    for method, path in [("POST", "/jobs"), ("GET", "/queues"), ("GET", "/openapi.json"),
                         ("GET", "/docs"), ("GET", "/jobs/x"), ("GET", "/nowhere")]:
        resp = await secured.request(method, path, headers=headers, json={"type": "t"})
        await expect_problem(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_auth_accepts_the_token_and_spares_the_probes(secured: TestClient,
                                                            queue: str) -> None:
    good = {"Authorization": "Bearer s3cret-token"}
    resp = await secured.post("/jobs", json={"type": "t", "queue": queue}, headers=good)
    assert resp.status == 202
    assert (await secured.get("/healthz")).status == 200
    assert (await secured.get("/readyz")).status == 200
    doc = await (await secured.get("/openapi.json", headers=good)).json()
    assert doc["security"] == [{"bearer": []}]


async def test_log_lines_carry_the_request_id_and_never_the_token(
    secured: TestClient, queue: str
) -> None:
    headers = {"Authorization": "Bearer s3cret-token", "X-Request-Id": "trace-77"}
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        await secured.post("/jobs", json={"type": "t", "queue": queue}, headers=headers)
        await secured.get("/queues", headers={"Authorization": "Bearer wrong-token"})
    # one canonical line per request: the view's event, or "Request"
    assert [(e["event"], e["status"]) for e in logs if "status" in e] == [
        ("Enqueued job", 202), ("Request", 401)]
    enqueued = logs[[e["event"] for e in logs].index("Enqueued job")]
    assert enqueued["request_id"] == "trace-77" and enqueued["state"] == "queued"
    assert enqueued["method"] == "POST" and enqueued["path"] == "/jobs" and "ms" in enqueued
    assert "s3cret" not in repr(logs) and "wrong-token" not in repr(logs)
