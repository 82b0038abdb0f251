"""PhoenixQ: a crash-safe, retry-aware asynchronous job system on Redis.

Write handlers with ``@phoenixq.handler("type")``; raise ``phoenixq.PermanentError``
to dead-letter a job at once; enqueue from Python with ``phoenixq.Client``.
"""

from shared.errors import PermanentError
from shared.handlers import Registry, default_registry, handler
from shared.jobs import Job, JobSpec

__all__ = ["Job", "JobSpec", "PermanentError", "Registry", "default_registry", "handler"]
__version__ = "0.1.0"
