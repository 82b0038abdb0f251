"""structlog configured for JSON lines on stdout (orjson renderer, cached loggers)."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default).decode()  # type: ignore[arg-type]


def configure(level: str = "INFO", service: str = "") -> None:
    """JSON logs on stdout: ``{"event": ..., "level": ..., "ts": ..., "service": ...}``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if service:
        processors.insert(1, _add_service(service))
    processors += [
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(serializer=_dumps),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


def _add_service(service: str) -> structlog.types.Processor:
    def add(_: object, __: str, event: dict) -> dict:
        event.setdefault("service", service)
        return event

    return add


def get_logger(name: str = "phoenixq") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
