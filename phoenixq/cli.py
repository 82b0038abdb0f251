"""The ``phoenixq`` command: run a service, or operate on queues and jobs."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="phoenixq")
def main() -> None:
    """PhoenixQ: crash-safe, retry-aware background jobs on Redis."""


@main.command()
def api() -> None:
    """Run the HTTP API (PORT, default 3000)."""
    from services.api.app import main as run

    run()


@main.command()
def scheduler() -> None:
    """Run a scheduler: promotes due jobs to ready."""
    from services.scheduler import main as run

    run()


@main.command()
def worker() -> None:
    """Run a worker: claims and runs jobs (PHOENIXQ_HANDLERS, PHOENIXQ_QUEUES)."""
    from services.worker import main as run

    run()


@main.command()
def reaper() -> None:
    """Run a reaper: visibility timeouts, dead workers, retention."""
    from services.reaper import main as run

    run()
