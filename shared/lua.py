"""Loads the Lua transitions and registers them on a Redis client.

Each transition lives in ``shared/scripts/<name>.lua`` with a header listing its KEYS,
ARGV and return codes. ``lib.lua`` (shared helpers) is prepended when loading.
Scripts run through ``register_script``: EVALSHA with a NOSCRIPT fallback to EVAL.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

TRANSITIONS = (
    "enqueue",
    "promote_due",
    "claim",
    "complete",
    "fail",
    "extend_lease",
    "requeue",
    "expire_leases",
    "recover_worker",
    "replay_dead",
    "cancel",
    "trim_retention",
    "heartbeat",
    "purge_dead",
)


@cache
def source(name: str) -> str:
    """The full text of a transition: lib.lua followed by the transition's file."""
    scripts = resources.files("shared") / "scripts"
    lib = (scripts / "lib.lua").read_text()
    return lib + (scripts / f"{name}.lua").read_text()


class Scripts:
    """The transitions registered on one client; ``scripts.claim(keys=..., args=...)``."""

    def __init__(self, client: Any) -> None:
        for name in TRANSITIONS:
            setattr(self, name, client.register_script(source(name)))

    enqueue: Any
    promote_due: Any
    claim: Any
    complete: Any
    fail: Any
    extend_lease: Any
    requeue: Any
    expire_leases: Any
    recover_worker: Any
    replay_dead: Any
    cancel: Any
    trim_retention: Any
    heartbeat: Any
    purge_dead: Any
