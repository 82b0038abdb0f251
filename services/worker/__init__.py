"""The worker service."""

from __future__ import annotations


def main() -> None:
    from services.worker.service import Worker
    from shared.handlers import load_modules
    from shared.runtime import run_service

    def factory(settings):  # type: ignore[no-untyped-def]
        load_modules(settings.handler_modules)
        return Worker(settings)

    run_service(factory, "worker")
