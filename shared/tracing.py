"""W3C trace context: continue the enqueueing request's trace around a job's handler.

The API stores the request's ``traceparent`` header with the job. The worker calls
``job_span(job)`` around the handler and binds ``trace_id_of(job)`` into the job's log
lines. With OpenTelemetry installed (``pip install phoenixq[otel]``) and a tracer
provider configured, the span ``phoenixq.job <type>`` is a child of the enqueueing
request's span and is exported; without it, the span is a no-op and the trace id still
reaches the logs, so a trace can be followed from the API's log to the worker's.

``configure_from_env()`` sets up the SDK when ``OTEL_TRACES_EXPORTER`` is ``console`` or
``otlp`` (the latter needs ``opentelemetry-exporter-otlp``); otherwise a provider set up
by the application (or ``opentelemetry-instrument``) is used as it is.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared import logging as plog
from shared.jobs import Job

TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
INVALID_TRACE_ID = "0" * 32
INVALID_SPAN_ID = "0" * 16

log = plog.get_logger("tracing")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The fields of a ``traceparent`` header (W3C Trace Context, version 00)."""

    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse(traceparent: str) -> TraceContext | None:
    """The header's fields, or None when it is absent or malformed (then it is ignored)."""
    match = TRACEPARENT_RE.fullmatch(traceparent.strip().lower()) if traceparent else None
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == INVALID_TRACE_ID or parent_id == INVALID_SPAN_ID:
        return None
    return TraceContext(trace_id, parent_id, int(flags, 16))


def trace_id_of(job: Job) -> str | None:
    """The trace id the job's log lines carry (None: the enqueue had no trace context)."""
    ctx = parse(job.traceparent)
    return ctx.trace_id if ctx else None


@functools.cache
def _otel() -> Any:
    """The ``opentelemetry.trace`` module, or None when OpenTelemetry is not installed.

    Cached: a failing import per job would cost more than the job's Redis work.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def job_span(job: Job) -> contextlib.AbstractContextManager[Any]:
    """A span ``phoenixq.job <type>`` continuing the job's trace; a no-op without OTel."""
    trace = _otel()
    if trace is None or isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return contextlib.nullcontext()  # no provider configured: spans would go nowhere
    return _span(trace, job)


@contextlib.contextmanager
def _span(trace: Any, job: Job) -> Iterator[Any]:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = None
    if parse(job.traceparent) is not None:
        parent = TraceContextTextMapPropagator().extract({"traceparent": job.traceparent})
    tracer = trace.get_tracer("phoenixq")
    attributes = {"messaging.system": "phoenixq", "messaging.destination.name": job.queue,
                  "messaging.message.id": job.id, "phoenixq.job.type": job.type,
                  "phoenixq.job.attempt": job.attempt}
    with tracer.start_as_current_span(f"phoenixq.job {job.type}", context=parent,
                                      kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield span


def current_traceparent() -> str:
    """The running span as a ``traceparent`` (for a handler enqueueing a child job)."""
    if _otel() is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def configure_from_env(service: str, env: dict[str, str] | None = None) -> bool:
    """Install an SDK tracer provider when ``OTEL_TRACES_EXPORTER`` asks for one."""
    env = dict(os.environ) if env is None else env
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name not in ("console", "otlp"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        exporter = _exporter(exporter_name)
    except ImportError as exc:
        log.warning("Tracing not configured: OpenTelemetry missing", error=str(exc))
        return False
    name = env.get("OTEL_SERVICE_NAME") or f"phoenixq-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
