"""structlog configured for JSON lines on stdout, cheap enough for a per-job line.

Lines are rendered with orjson and written once per event-loop iteration (one write
for every line logged in that iteration) rather than one write and flush per line;
outside an event loop every line is written at once.
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

    log = debug = info = warning = warn = error = critical = exception = msg


class LineWriterFactory:
    def __init__(self, stream: BinaryIO) -> None:
        self._writer = LineWriter(stream)

    def __call__(self, *args: object) -> LineWriter:
        return self._writer


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
