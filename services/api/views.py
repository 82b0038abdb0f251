"""Job views and probes: parse and validate, call the store, answer JSON."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from services.api import validation as v
from services.api.docs_page import render_docs
from services.api.middleware import log_line
from services.api.openapi import for_app
from services.api.problems import Problem, json_response
from services.api.typedefs import enqueuer_key, openapi_key, store_key
from shared.errors import InvalidState, JobNotFound
from shared.jobs import Job, JobSpec
from shared.store import EnqueueResult, Store


def _result(res: EnqueueResult) -> dict[str, object]:
    body: dict[str, object] = {"jobId": res.job_id, "status": res.state}
    if res.duplicate:
        body["duplicate"] = True
    return body


async def create_job(request: web.Request) -> web.Response:
    """POST /jobs — enqueue one job: 202 queued|scheduled, 200 for a duplicate key."""
    spec = v.job_spec(await v.read_json(request), request)
    res = await request.app[enqueuer_key].submit(spec.queue, spec)
    log_line(request, "Enqueued job", job_id=res.job_id, queue=spec.queue, type=spec.type,
             state=res.state, duplicate=res.duplicate)
    status = 200 if res.duplicate else 202
    return json_response(_result(res), status, headers={"Location": f"/jobs/{res.job_id}"})


async def create_batch(request: web.Request) -> web.Response:
    """POST /jobs/batch — up to 1,000 jobs, enqueued atomically per queue."""
    specs = v.batch_specs(await v.read_json(request), request)
    results = await enqueue_grouped(request.app[store_key], specs)
    log_line(request, "Enqueued batch", jobs=len(specs), queues=len({s.queue for s in specs}),
             duplicates=sum(r.duplicate for r in results))
    return json_response({"jobs": [_result(r) for r in results]}, 202)


async def enqueue_grouped(store: Store, specs: Sequence[JobSpec]) -> list[EnqueueResult]:
    """One enqueue script per queue; results in the order of ``specs``."""
    by_queue: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        by_queue.setdefault(spec.queue, []).append(index)
    results: list[EnqueueResult | None] = [None] * len(specs)
    for queue, indexes in by_queue.items():
        done = await store.enqueue(queue, [specs[i] for i in indexes])
        for index, res in zip(indexes, done, strict=True):
            results[index] = res
    return [r for r in results if r is not None]


async def find_job(request: web.Request) -> Job:
    """The job named in the path (optionally narrowed by ``?queue=``), else 404."""
    job_id = v.check_job_id(request.match_info["jobId"])
    queue = request.query.get("queue")
    if queue is not None:
        v.check_name("queue", queue)
    try:
        return await request.app[store_key].get_job(job_id, queue)
    except JobNotFound:
        raise Problem(404, "job_not_found", "Job not found",
                      f"No job {job_id} exists (or its retention ran out).",
                      field="jobId") from None


async def get_job(request: web.Request) -> web.Response:
    """GET /jobs/{jobId} — state, attempts, timestamps, last error, history, result."""
    return json_response((await find_job(request)).to_api())


async def cancel_job(request: web.Request) -> web.Response:
    """POST /jobs/{jobId}/cancel — scheduled, queued or retrying -> cancelled; else 409."""
    job = await find_job(request)
    try:
        await request.app[store_key].cancel(job.queue, job.id)
    except InvalidState as exc:
        raise Problem(409, "invalid_state", "Job cannot be cancelled",
                      f"The job is {exc.state}; only scheduled, queued or retrying jobs "
                      "can be cancelled.", state=exc.state) from None
    except JobNotFound:
        raise Problem(404, "job_not_found", "Job not found", f"No job {job.id} exists.",
                      field="jobId") from None
    log_line(request, "Cancelled job", job_id=job.id, queue=job.queue, previous=job.state)
    return json_response({"jobId": job.id, "status": "cancelled"})


async def replay_job(request: web.Request) -> web.Response:
    """POST /jobs/{jobId}/replay — a dead job back to queued, fresh attempts, history kept."""
    job = await find_job(request)
    replayed: list[str] = []
    if job.state == "dead":
        replayed, _ = await request.app[store_key].replay_dead(job.queue, [job.id])
    if not replayed:
        state = "dead (changed meanwhile)" if job.state == "dead" else job.state
        raise Problem(409, "invalid_state", "Job cannot be replayed",
                      f"The job is {state}; only dead jobs can be replayed.", state=job.state)
    log_line(request, "Replayed job", job_id=job.id, queue=job.queue)
    return json_response({"jobId": job.id, "status": "queued", "replays": job.replays + 1})


async def healthz(_: web.Request) -> web.Response:
    """GET /healthz — the process is alive (never touches Redis)."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz — Redis answers PING (503 otherwise)."""
    await request.app[store_key].redis.ping()
    return json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json — the OpenAPI 3.1 document."""
    return json_response(for_app(request.app[openapi_key], request.app))


async def docs(request: web.Request) -> web.Response:
    """GET /docs — a self-contained HTML page rendered from the OpenAPI document."""
    doc = for_app(request.app[openapi_key], request.app)
    return web.Response(text=render_docs(doc), content_type="text/html")
