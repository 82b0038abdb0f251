"""Job handlers: the registry, the ``@handler`` decorator and module loading."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from shared.jobs import Job

Handler = Callable[[Job], Awaitable[Any]]


class Registry:
    """Maps job types to the async functions that run them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, job_type: str, func: Handler) -> Handler:
        if job_type in self._handlers and self._handlers[job_type] is not func:
            raise ValueError(f"a handler for {job_type!r} is already registered")
        self._handlers[job_type] = func
        return func

    def handler(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@registry.handler("email.send")`` on ``async def send(job)``."""

        def decorate(func: Handler) -> Handler:
            return self.register(job_type, func)

        return decorate

    def get(self, job_type: str) -> Handler | None:
        return self._handlers.get(job_type)

    def types(self) -> list[str]:
        return sorted(self._handlers)


#: The registry ``phoenixq.handler`` writes to and workers read by default.
default_registry = Registry()
handler = default_registry.handler


def load_modules(modules: list[str]) -> None:
    """Import each handler module so its ``@handler`` decorators register."""
    for name in modules:
        importlib.import_module(name)
