"""Trace context from the enqueue request to the worker's logs and spans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.worker.service import Worker
from shared import tracing
from shared.handlers import Registry
from shared.jobs import Job, JobSpec
from shared.settings import Settings
from shared.store import Store
from tests.harness.http import start_api
from tests.harness.services import Topology
from tests.harness.wait import async_wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(("header", "expected"), [
    (TRACEPARENT, tracing.TraceContext(TRACE_ID, PARENT_ID, 1)),
    (TRACEPARENT.upper(), tracing.TraceContext(TRACE_ID, PARENT_ID, 1)),
    (f"00-{TRACE_ID}-{PARENT_ID}-00", tracing.TraceContext(TRACE_ID, PARENT_ID, 0)),
    ("", None),
    ("garbage", None),
    (f"ff-{TRACE_ID}-{PARENT_ID}-01", None),  # version ff is invalid
    (f"00-{'0' * 32}-{PARENT_ID}-01", None),  # all-zero trace id
    (f"00-{TRACE_ID}-{'0' * 16}-01", None),  # all-zero parent id
    (f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", None),
])
def test_parse_traceparent(header: str, expected: tracing.TraceContext | None):
    assert tracing.parse(header) == expected


async def post(topology: Topology, body: dict, headers: dict | None = None) -> str:
    async with aiohttp.ClientSession() as http, http.post(
        f"{topology.api_url}/jobs", json=body, headers=headers
    ) as resp:
        assert resp.status == 202
        return (await resp.json())["jobId"]


async def test_trace_id_and_canonical_fields_in_the_workers_log(topology, queue):
    await start_api(topology)
    topology.start("scheduler")  # promotes the retry
    worker = topology.start("worker")
    job_id = await post(topology, {"type": "email.send", "queue": queue,
                                   "payload": {"to": "private@example.com"}},
                        {"traceparent": TRACEPARENT, "X-Request-Id": "req-1"})
    done = await asyncio.to_thread(worker.wait_log, "Completed job", 15, job_id=job_id)
    lines = [line for line in worker.lines if line.get("job_id") == job_id]
    assert all(line["trace_id"] == TRACE_ID and line["request_id"] == "req-1"
               for line in lines)
    retry = next(line for line in lines if line["event"].startswith("Retrying job"))
    assert retry["error_class"] == "RuntimeError" and retry["outcome"] == "retrying"
    for outcome in (retry, done):
        assert {"type", "queue", "attempt", "wait_ms", "run_ms", "outcome"} <= set(outcome)
    assert done["outcome"] == "completed" and done["attempt"] == 2
    assert not any("payload" in line for line in lines)  # personal data stays out by default


async def test_payloads_logged_only_when_asked(topology, queue):
    await start_api(topology)
    worker = topology.start("worker", PHOENIXQ_LOG_PAYLOADS="true")
    job_id = await post(topology, {"type": "noop", "queue": queue, "payload": {"n": 7}})
    handling = await asyncio.to_thread(worker.wait_log, "Handling job", 15, job_id=job_id)
    assert handling["payload"] == {"n": 7}
    assert handling["trace_id"] is None  # no traceparent sent


async def test_dead_line_names_the_error_class(topology, queue):
    await start_api(topology)
    worker = topology.start("worker")
    job_id = await post(topology, {"type": "fail.permanent", "queue": queue})
    dead = await asyncio.to_thread(worker.wait_log, "Job dead: moved to the DLQ", 15,
                                   job_id=job_id)
    assert dead["error_class"] == "PermanentError" and dead["outcome"] == "dead"


# -- OpenTelemetry (optional extra) ----------------------------------------------------

@pytest.fixture(scope="module")
def spans() -> object:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another tracer provider is already installed in this process")
    return exporter


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[tuple[Worker, list[str]]]:
    seen: list[str] = []
    registry = Registry()

    @registry.handler("traced")
    async def traced(job: Job) -> None:
        seen.append(tracing.current_traceparent())
        if job.payload == "fail":
            raise RuntimeError("boom")

    svc = Worker(settings, registry)
    await svc.start()
    task = asyncio.create_task(svc.run())
    yield svc, seen
    svc.stop()
    await task
    await svc.shutdown()


async def enqueue_traced(store: Store, queue: str, payload: object = None) -> None:
    spec = JobSpec(type="traced", queue=queue, payload=payload, traceparent=TRACEPARENT,
                   max_attempts=1)
    await store.enqueue(queue, [spec.resolved(store.settings)])


async def test_worker_span_continues_the_enqueue_trace(spans, worker, store, queue):
    from opentelemetry.trace import SpanKind, StatusCode

    spans.clear()  # type: ignore[attr-defined]
    _, seen = worker
    await enqueue_traced(store, queue)
    await enqueue_traced(store, queue, "fail")
    finished = await async_wait_until(
        lambda: _done(spans.get_finished_spans()), 10,  # type: ignore[attr-defined]
        what="two job spans")
    ok, failed = sorted(finished, key=lambda s: s.status.status_code != StatusCode.UNSET)
    for span in finished:
        assert span.name == "phoenixq.job traced" and span.kind == SpanKind.CONSUMER
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert format(span.parent.span_id, "016x") == PARENT_ID
        assert span.attributes["messaging.destination.name"] == queue
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.events[0].name == "exception"
    child = tracing.parse(seen[0])
    assert child is not None and child.trace_id == TRACE_ID and child.parent_id != PARENT_ID


async def _done(finished: object) -> object:
    jobs = [s for s in finished if s.name.startswith("phoenixq.job")]  # type: ignore[attr-defined]
    return jobs if len(jobs) == 2 else None
