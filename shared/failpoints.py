"""Named failpoints for fault tests: make a process exit or hang at a chosen point.

Off unless ``PHOENIXQ_FAILPOINTS`` is set, e.g.
``PHOENIXQ_FAILPOINTS="worker.after_blmove=exit:0.1,worker.before_complete=hang:0.05"``:
each entry is ``name=action[:probability]`` with action ``exit`` (``os._exit(137)``, as
abrupt as SIGKILL) or ``hang`` (block the event loop forever, as a frozen process).
When unset, ``hit()`` is one dictionary lookup.
"""

from __future__ import annotations

import os
import random
import time

POINTS = (
    "worker.after_blmove",       # ids moved into processing, claim not yet run
    "worker.before_complete",    # handler returned, complete not yet sent
    "scheduler.before_promote",  # due jobs found, promote batch not yet run
    "reaper.before_expire",      # reaper pass started, leases not yet expired
)


def _parse(spec: str) -> dict[str, tuple[str, float]]:
    active: dict[str, tuple[str, float]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, action = entry.partition("=")
        kind, _, prob = action.partition(":")
        if name not in POINTS or kind not in ("exit", "hang"):
            raise ValueError(f"bad failpoint {entry!r}; names: {', '.join(POINTS)}")
        active[name] = (kind, float(prob or 1.0))
    return active


_ACTIVE = _parse(os.environ.get("PHOENIXQ_FAILPOINTS", ""))


def hit(name: str) -> None:
    """Trigger failpoint ``name`` if it is active (and its dice say so)."""
    if not _ACTIVE:
        return
    point = _ACTIVE.get(name)
    if point is None or random.random() >= point[1]:
        return
    from shared import logging as plog

    plog.flush()  # the simulated crash keeps what a real one would have written
    if point[0] == "exit":
        os._exit(137)
    while True:  # hang: freeze the whole process, like SIGSTOP
        time.sleep(3600)
