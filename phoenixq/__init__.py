"""PhoenixQ: a crash-safe, retry-aware asynchronous job system on Redis.

Write handlers with ``@phoenixq.handler("type")``; raise ``phoenixq.PermanentError``
to dead-letter a job at once; enqueue from Python with ``phoenixq.Client`` (async) or
``phoenixq.SyncClient`` (scripts).
"""

from shared.client import Client, Enqueued, SyncClient
from shared.errors import JobNotFound, PermanentError, ValidationError
from shared.handlers import Registry, default_registry, handler
from shared.jobs import Job, JobSpec

__all__ = [
    "Client", "Enqueued", "Job", "JobNotFound", "JobSpec", "PermanentError", "Registry",
    "SyncClient", "ValidationError", "default_registry", "handler",
]
__version__ = "0.1.0"
