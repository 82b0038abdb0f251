"""Return codes of the Lua transitions and the typed exceptions they map to."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """Numeric codes returned by the transition scripts (see each script's header)."""

    OK = 0
    STALE_LEASE = 1
    NOT_FOUND = 2
    WRONG_STATE = 3
    ALIVE = 6


class PhoenixQError(Exception):
    """Base class of PhoenixQ's errors."""


class PermanentError(PhoenixQError):
    """Raised by a handler: the job fails at once, without retries, into the DLQ."""


class ValidationError(PhoenixQError, ValueError):
    """A job or request field is invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobNotFound(PhoenixQError):
    """No job with that id (it never existed, or its retention ran out)."""


class StaleLease(PhoenixQError):
    """The caller's lease token is no longer the job's: another attempt owns it."""


class InvalidState(PhoenixQError):
    """The job is not in a state the operation applies to."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


def check(code: int) -> Code:
    """Map a script's return code to ``Code``; raise for the failure codes."""
    result = Code(code)
    if result is Code.NOT_FOUND:
        raise JobNotFound("job not found")
    if result is Code.STALE_LEASE:
        raise StaleLease("lease token is stale: another attempt owns this job")
    return result
