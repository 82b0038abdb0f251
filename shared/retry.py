"""Jittered exponential backoff for reconnect loops (not for job retries: see lib.lua)."""

from __future__ import annotations

import random


class Backoff:
    """Full-jitter exponential delays in seconds: ``next()`` grows, ``reset()`` restarts."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base, self.cap = base, cap
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
