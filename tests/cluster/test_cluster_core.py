"""Core worker and end-to-end tests, rerun unchanged against a 3-master Redis Cluster.

The fixtures of ``tests/cluster/conftest.py`` replace the single-node ones, and each
test's queue lands on the next master in turn.
"""

from __future__ import annotations

import pytest

from tests.test_e2e import (  # noqa: F401  (collected again here, on the cluster)
    test_delayed_job_runs_at_its_time_not_before,
    test_failing_job_backs_off_then_dies,
    test_killed_worker_job_finished_by_another_before_visibility_timeout,
    test_seed_example_over_http,
)
from tests.test_worker import (  # noqa: F401
    registry,
    test_completes_and_stores_result,
    test_exhausted_attempts_go_to_dlq,
    test_idempotent_key_already_done_skips_handler,
    test_reaper_recovers_dead_worker_jobs,
    test_retries_with_backoff_then_succeeds,
    test_scheduler_wakes_early_for_sooner_job,
)

pytestmark = pytest.mark.cluster
