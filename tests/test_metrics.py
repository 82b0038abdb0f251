"""Prometheus metrics: real service processes, scraped after a small run; exact deltas."""

from __future__ import annotations

import signal

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared import metrics
from shared.connection import connect
from shared.settings import Settings
from tests.harness.http import start_api
from tests.harness.ports import free_port
from tests.harness.services import ServiceProcess, Topology
from tests.harness.wait import async_wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """The sum over every series of ``name``, whatever their labels."""
    return sum(v for (sample, _), v in samples.items() if sample == name)


def start(topology: Topology, name: str) -> tuple[ServiceProcess, str]:
    """Start a service with its health/metrics server on a free port."""
    port = free_port()
    return (topology.start(name, PHOENIXQ_HEALTH_PORT=str(port)),
            f"http://127.0.0.1:{port}")


async def call(method: str, url: str, body: dict | None = None) -> dict:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as resp:
        data = await resp.json()
        assert resp.status < 300, data
        return data


async def wait_status(api: str, job_id: str, status: str) -> None:
    async def done() -> bool:
        return (await call("GET", f"{api}/jobs/{job_id}"))["status"] == status

    await async_wait_until(done, 20, what=f"job {job_id} {status}")


async def test_counters_move_by_exactly_the_run(topology, queue):
    api = topology.api_url
    await start_api(topology)
    _, scheduler = start(topology, "scheduler")
    _, worker = start(topology, "worker")
    _, reaper = start(topology, "reaper")

    async def enqueue(job_type: str, **extra: object) -> str:
        body = {"type": job_type, "queue": queue, **extra}
        return (await call("POST", f"{api}/jobs", body))["jobId"]

    noops = [await enqueue("noop") for _ in range(2)] + [await enqueue("noop", delayMs=300)]
    later = await enqueue("noop", delayMs=60_000)
    email = await enqueue("email.send", payload={"to": "a@example.com"})
    doomed = await enqueue("fail.permanent")
    await call("POST", f"{api}/jobs/{later}/cancel")
    for job_id in [*noops, email]:
        await wait_status(api, job_id, "completed")
    await wait_status(api, doomed, "dead")
    await call("POST", f"{api}/jobs/{doomed}/replay")

    async def dead_twice() -> Samples | None:
        samples = await scrape(worker)
        dead = value(samples, "phoenixq_jobs_dead_lettered_total", queue=queue,
                     type="fail.permanent")
        return samples if dead == 2 else None

    w = await async_wait_until(dead_twice, 20, what="the replayed job to die again")
    job = {"queue": queue}
    assert value(w, "phoenixq_jobs_completed_total", **job, type="noop") == 3
    assert value(w, "phoenixq_jobs_completed_total", **job, type="email.send") == 1
    assert value(w, "phoenixq_jobs_retried_total", **job, type="email.send") == 1
    assert value(w, "phoenixq_jobs_failed_total", **job, type="email.send") == 1
    assert value(w, "phoenixq_jobs_failed_total", **job, type="fail.permanent") == 2
    assert value(w, "phoenixq_jobs_retried_total", **job, type="fail.permanent") == 0
    assert value(w, "phoenixq_job_run_duration_seconds_count", **job, type="noop") == 3
    assert value(w, "phoenixq_job_queue_wait_seconds_count", **job, type="noop") == 3
    # lateness: the delayed noop and the email's retry were due later than created
    assert value(w, "phoenixq_job_lateness_seconds_count", **job, type="noop") == 1
    assert value(w, "phoenixq_job_lateness_seconds_count", **job, type="email.send") == 1
    assert value(w, "phoenixq_stale_completions_total", **job, type="noop") == 0
    assert total(w, "phoenixq_redis_errors_total") == 0

    a = await scrape(api)
    assert value(a, "phoenixq_jobs_enqueued_total", **job, type="noop") == 4
    assert value(a, "phoenixq_jobs_enqueued_total", **job, type="email.send") == 1
    assert value(a, "phoenixq_jobs_cancelled_total", **job, type="noop") == 1
    assert value(a, "phoenixq_jobs_replayed_total", **job, type="fail.permanent") == 1
    assert value(a, "phoenixq_http_requests_total", method="POST", route="/jobs",
                 status="202") == 6
    assert value(a, "phoenixq_http_request_duration_seconds_count", method="POST",
                 route="/jobs") == 6
    assert value(a, "phoenixq_queue_jobs", **job, state="completed") == 4
    assert value(a, "phoenixq_queue_jobs", **job, state="dead") == 1
    assert value(a, "phoenixq_queue_jobs", **job, state="queued") == 0
    assert value(a, "phoenixq_queue_oldest_ready_age_seconds", **job) == 0

    s = await scrape(scheduler)
    assert value(s, "phoenixq_jobs_promoted_total", **job) == 2  # the delayed noop, a retry
    assert total(s, "phoenixq_redis_errors_total") == 0
    r = await scrape(reaper)
    assert value(r, "phoenixq_leases_expired_total", **job) == 0
    assert total(r, "phoenixq_redis_errors_total") == 0


async def test_queue_gauges_show_depth_and_oldest_ready_age(topology, queue):
    api = topology.api_url
    await start_api(topology)
    for _ in range(3):
        await call("POST", f"{api}/jobs", {"type": "noop", "queue": queue})
    await call("POST", f"{api}/jobs", {"type": "noop", "queue": queue, "delayMs": 60_000})

    async def aged() -> Samples | None:
        samples = await scrape(api)
        age = value(samples, "phoenixq_queue_oldest_ready_age_seconds", queue=queue)
        return samples if age > 0 else None

    a = await async_wait_until(aged, 10, what="oldest-ready age above zero")
    assert value(a, "phoenixq_queue_jobs", queue=queue, state="queued") == 3
    assert value(a, "phoenixq_queue_jobs", queue=queue, state="scheduled") == 1
    assert value(a, "phoenixq_queue_paused", queue=queue) == 0


async def test_reaper_counts_expired_leases(topology, queue):
    api = topology.api_url
    await start_api(topology)
    worker = topology.start("worker")
    _, reaper = start(topology, "reaper")
    body = {"type": "sleep", "queue": queue, "payload": {"seconds": 30},
            "visibilityTimeoutMs": 300}
    job_id = (await call("POST", f"{api}/jobs", body))["jobId"]
    worker.wait_log("Handling job", job_id=job_id)
    worker.signal(signal.SIGSTOP)  # frozen: no lease extensions, no heartbeats

    async def expired() -> bool:
        samples = await scrape(reaper)
        return value(samples, "phoenixq_leases_expired_total", queue=queue) == 1

    await async_wait_until(expired, 15, what="the reaper to count one expired lease")
    worker.kill()


async def test_reaper_counts_jobs_recovered_from_a_dead_worker(topology, queue):
    api = topology.api_url
    await start_api(topology)
    worker = topology.start("worker")
    _, reaper = start(topology, "reaper")
    body = {"type": "sleep", "queue": queue, "payload": {"seconds": 30}}
    job_id = (await call("POST", f"{api}/jobs", body))["jobId"]
    worker.wait_log("Handling job", job_id=job_id)
    worker.kill()

    async def recovered() -> bool:
        samples = await scrape(reaper)
        return value(samples, "phoenixq_jobs_recovered_total", queue=queue,
                     outcome="retrying") == 1

    await async_wait_until(recovered, 15, what="the reaper to count one recovered job")


async def test_healthz_and_metrics_share_the_health_port(topology):
    _, scheduler = start(topology, "scheduler")
    async with aiohttp.ClientSession() as http, http.get(f"{scheduler}/healthz") as resp:
        assert (await resp.json())["service"] == "scheduler"
    samples = await scrape(scheduler)
    assert ("process_cpu_seconds_total", frozenset()) in samples


async def test_redis_reconnects_are_counted(settings: Settings):
    client = connect(settings)
    killer = connect(settings)
    metrics.instrument_redis(client)
    before = _sample("phoenixq_redis_reconnects_total")
    try:
        await client.ping()
        await killer.client_kill_filter(_id=await client.client_id())
        assert await client.ping()  # the pool notices the dead socket and reconnects
    finally:
        await client.aclose()
        await killer.aclose()
    assert _sample("phoenixq_redis_reconnects_total") == before + 1


async def test_redis_errors_are_counted_by_class(settings: Settings):
    client = connect(settings)
    metrics.instrument_redis(client)
    refused = connect(Settings.from_env({}, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    metrics.instrument_redis(refused)
    replies = _sample("phoenixq_redis_errors_total", error="ResponseError")
    refusals = _sample("phoenixq_redis_errors_total", error="ConnectionError")
    try:
        with pytest.raises(ResponseError):
            await client.execute_command("NO-SUCH-COMMAND")
        with pytest.raises(RedisConnectionError):
            await refused.ping()
    finally:
        await client.aclose()
        await refused.aclose()
    assert _sample("phoenixq_redis_errors_total", error="ResponseError") == replies + 1
    assert _sample("phoenixq_redis_errors_total", error="ConnectionError") > refusals


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
