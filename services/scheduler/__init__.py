"""The scheduler service."""

from __future__ import annotations


def main() -> None:
    from services.scheduler.service import Scheduler
    from shared.runtime import run_service

    run_service(Scheduler, "scheduler")
