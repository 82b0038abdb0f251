"""structlog configured for JSON lines on stdout, cheap enough for a per-job line.

Lines are rendered with orjson. Info and debug lines are written once per event-loop
iteration (one write for every line logged in that iteration) rather than one write
and flush per line; warnings and errors, and every line outside an event loop, are
written at once. A process killed with SIGKILL loses at most the info lines of the
iteration it died in.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, BinaryIO

import orjson
import structlog


class _Timestamp:
    """``ts`` as ISO 8601 UTC with milliseconds; the seconds part is formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: object, __: str, event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["ts"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event


class LineWriter:
    """A structlog logger writing rendered lines to a binary stream, batched per loop turn."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._scheduled = False

    def msg(self, line: bytes) -> None:
        self._lines.append(line)
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self._scheduled = True
        except RuntimeError:  # no event loop: write now
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            data = b"\n".join(self._lines) + b"\n"
            self._lines.clear()
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass

    def msg_now(self, line: bytes) -> None:
        """Warnings and errors are written at once, with anything buffered before them."""
        self._lines.append(line)
        self.flush()

    log = debug = info = msg
    warning = warn = error = critical = exception = msg_now


class LineWriterFactory:
    def __init__(self, stream: BinaryIO) -> None:
        self._writer = LineWriter(stream)
        _writers.append(self._writer)

    def __call__(self, *args: object) -> LineWriter:
        return self._writer


_writers: list[LineWriter] = []


def flush() -> None:
    """Write every buffered line now (before a deliberate exit or freeze)."""
    for writer in _writers:
        writer.flush()


def configure(level: str = "INFO", service: str = "", stream: BinaryIO | None = None) -> None:
    """JSON logs on stdout: ``{"event": ..., "level": ..., "ts": ..., "service": ...}``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    if service:
        processors.append(_add_service(service))
    processors += [
        structlog.processors.add_log_level,
        _Timestamp(),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=LineWriterFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


def _add_service(service: str) -> Any:
    def add(_: object, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return add


def get_logger(name: str = "phoenixq") -> Any:
    return structlog.get_logger(name)
