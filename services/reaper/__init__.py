"""The reaper service."""

from __future__ import annotations


def main() -> None:
    from services.reaper.service import Reaper
    from shared.runtime import run_service

    run_service(Reaper, "reaper")
