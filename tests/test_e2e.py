"""End to end: the four services as real processes, jobs enqueued over HTTP."""

from __future__ import annotations

import os
import signal
import time

import aiohttp
import pytest

from tests.harness.services import Topology
from tests.harness.wait import async_wait_until, wait_until


async def post_job(topology: Topology, body: dict) -> dict:
    async with aiohttp.ClientSession() as http, http.post(
        f"{topology.api_url}/jobs", json=body
    ) as resp:
        data = await resp.json()
        data["_status"] = resp.status
        return data


async def get_job(topology: Topology, job_id: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(
        f"{topology.api_url}/jobs/{job_id}"
    ) as resp:
        return await resp.json()


async def wait_status(topology: Topology, job_id: str, *states: str,
                      timeout: float = 15) -> dict:
    async def check() -> dict | None:
        job = await get_job(topology, job_id)
        return job if job.get("status") in states else None

    return await async_wait_until(check, timeout, what=f"job {job_id} to be {states}")


async def test_seed_example_over_http(topology, queue):
    topology.start("api")
    topology.start("scheduler")
    worker = topology.start("worker")
    topology.start("reaper")
    reply = await post_job(topology, {"type": "email.send", "payload": {"to": "test@test.com"},
                                      "queue": queue})
    assert reply["_status"] == 202 and reply["status"] == "queued"
    job = await wait_status(topology, reply["jobId"], "completed")
    assert job["attempts"] == 2 and job["result"] == {"delivered": True, "to": "test@test.com"}
    assert job["lastError"].startswith("RuntimeError: SMTP server busy")
    story = [line["event"] for line in worker.lines if line.get("job_id") == reply["jobId"]]
    assert story[0] == "Handling job" and story[1].startswith("Retrying job in ")
    assert story[2:] == ["Handling job", "Completed job"]


async def test_delayed_job_runs_at_its_time_not_before(topology, queue):
    topology.start("api")
    topology.start("scheduler")
    topology.start("worker")
    sent = time.time() * 1000
    reply = await post_job(topology, {"type": "noop", "delayMs": 1500, "queue": queue})
    assert reply["_status"] == 202 and reply["status"] == "scheduled"
    job = await wait_status(topology, reply["jobId"], "completed", timeout=10)
    assert job["startedAt"] >= job["availableAt"] >= sent + 1500 - 50
    assert job["startedAt"] - job["availableAt"] < 500


async def test_failing_job_backs_off_then_dies(topology, queue):
    topology.start("api")
    topology.start("scheduler")
    topology.start("worker")
    reply = await post_job(topology, {"type": "fail.always", "queue": queue, "maxAttempts": 4,
                                      "backoff": {"baseMs": 200, "capMs": 5000}})
    job = await wait_status(topology, reply["jobId"], "dead", timeout=20)
    assert job["attempts"] == 4 and len(job["history"]) == 4
    starts = [h["startedAt"] for h in job["history"]]
    ends = [h["finishedAt"] for h in job["history"]]
    waits = [starts[i + 1] - ends[i] for i in range(3)]
    assert all(w >= 200 for w in waits)  # never retried hot
    assert waits[2] >= 0.5 * 800 or waits[2] >= waits[0]  # growing (with jitter)


async def test_killed_worker_job_finished_by_another_before_visibility_timeout(
    topology, queue
):
    topology.start("api")
    topology.start("scheduler")
    topology.start("reaper")
    victim = topology.start("worker")
    reply = await post_job(topology, {"type": "sleep", "payload": {"seconds": 1},
                                      "queue": queue, "visibilityTimeoutMs": 60_000})
    await wait_status(topology, reply["jobId"], "processing")
    victim.kill()  # SIGKILL mid-job
    killed_at = time.monotonic()
    topology.start("worker")
    job = await wait_status(topology, reply["jobId"], "completed", timeout=30)
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 15  # far below the 60 s visibility timeout
    assert job["attempts"] == 2 and "died" in job["history"][0]["error"]


async def test_stale_completion_after_lease_expiry_is_rejected(topology, queue):
    topology.start("api")
    topology.start("scheduler")
    topology.start("reaper", PHOENIXQ_WORKER_TTL_MS="60000")
    # concurrency 1: while frozen it holds no pending BLMOVE that could take the retry
    zombie = topology.start("worker", PHOENIXQ_WORKER_TTL_MS="60000", PHOENIXQ_CONCURRENCY="1")
    reply = await post_job(topology, {"type": "sleep", "payload": {"seconds": 1.5},
                                      "queue": queue, "visibilityTimeoutMs": 700})
    job_id = reply["jobId"]
    await wait_status(topology, job_id, "processing")
    zombie.signal(signal.SIGSTOP)  # frozen: cannot extend its lease
    rescuer = topology.start("worker", PHOENIXQ_WORKER_TTL_MS="60000")
    job = await wait_status(topology, job_id, "completed", timeout=20)
    assert job["attempts"] == 2 and job["worker"] != zombie.lines[0]["worker_id"]
    zombie.signal(signal.SIGCONT)
    # its extension or its completion is refused, and it says so
    wait_until(lambda: [line for line in list(zombie.lines) if line.get("job_id") == job_id
                        and line.get("transition") == "stale"], 10, what="stale log line")
    after = await get_job(topology, job_id)
    assert after["finishedAt"] == job["finishedAt"] and after["attempts"] == 2
    assert rescuer.alive()


async def test_sigterm_drains_and_exits_zero(topology, queue):
    topology.start("api")
    worker = topology.start("worker", PHOENIXQ_SHUTDOWN_GRACE_MS="5000")
    reply = await post_job(topology, {"type": "sleep", "payload": {"seconds": 1},
                                      "queue": queue})
    await wait_status(topology, reply["jobId"], "processing")
    assert worker.terminate(timeout=15) == 0
    job = await get_job(topology, reply["jobId"])
    assert job["status"] == "completed" and job["attempts"] == 1
    later = await post_job(topology, {"type": "noop", "queue": queue})
    assert (await get_job(topology, later["jobId"]))["status"] == "queued"


@pytest.mark.parametrize("module", ["services.api", "services.scheduler", "services.reaper"])
def test_every_service_stops_cleanly_on_sigterm(topology, module):
    proc = topology.start(module.split(".")[1])
    assert proc.terminate(timeout=15) == 0


async def test_api_processes_share_the_port_and_stop_as_one(topology, queue):
    api = topology.start("api", PHOENIXQ_API_PROCESSES="2")
    pids = api.wait_log("API supervisor started")["pids"]
    wait_until(lambda: len(api.events("API listening")) == 2, 15, what="both API processes")
    replies = [await post_job(topology, {"type": "noop", "queue": queue}) for _ in range(20)]
    assert {r["_status"] for r in replies} == {202}  # a new connection each: both serve
    os.kill(pids[0], signal.SIGKILL)  # one dies: the unit stops, for its manager to restart
    assert api.proc is not None and api.proc.wait(15) == 1
    wait_until(lambda: not _alive(pids[1]), 15, what="the sibling to stop")

    again = topology.start("api", PHOENIXQ_API_PROCESSES="2")
    wait_until(lambda: len(again.events("API listening")) == 2, 15, what="both API processes")
    assert again.terminate(timeout=15) == 0  # SIGTERM reaches both; a clean stop


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
