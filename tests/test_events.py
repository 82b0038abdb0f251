"""GET /events (Server-Sent Events) and `phoenixq events`, on real service processes."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from click.testing import CliRunner
from prometheus_client import REGISTRY

from phoenixq.cli import main as cli
from tests.harness.http import start_api
from tests.harness.services import Topology
from tests.harness.wait import async_wait_until


async def post_job(topology: Topology, body: dict) -> str:
    async with aiohttp.ClientSession() as http, http.post(
        f"{topology.api_url}/jobs", json=body
    ) as resp:
        assert resp.status == 202
        return (await resp.json())["jobId"]


async def read_events(resp: aiohttp.ClientResponse, count: int,
                      timeout: float = 15) -> list[dict]:
    """The next ``count`` SSE messages: {'id', 'event', 'data'}; comments skipped."""
    messages: list[dict] = []
    current: dict = {}
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line == "":
                if "data" in current:
                    messages.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, text = line.partition(": ")
                current[name] = orjson.loads(text) if name == "data" else text
    return messages


async def wait_completed(topology: Topology, job_id: str) -> None:
    async def done() -> bool:
        async with aiohttp.ClientSession() as http, http.get(
            f"{topology.api_url}/jobs/{job_id}"
        ) as resp:
            return (await resp.json())["status"] == "completed"

    await async_wait_until(done, 15, what=f"job {job_id} completed")


async def test_one_jobs_events_in_order_then_resume(topology, queue):
    await start_api(topology)
    topology.start("worker")
    other = await post_job(topology, {"type": "noop", "queue": queue})
    job_id = await post_job(topology, {"type": "noop", "queue": queue})
    await wait_completed(topology, job_id)
    url = f"{topology.api_url}/events?jobId={job_id}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await read_events(resp, 3)
    assert [m["event"] for m in first] == ["queued", "processing", "completed"]
    assert all(m["data"]["jobId"] == job_id and m["data"]["queue"] == queue for m in first)
    assert [m["data"]["attempt"] for m in first] == [0, 1, 1]
    assert all(m["id"] == m["data"]["id"] for m in first)
    assert other not in {m["data"]["jobId"] for m in first}

    headers = {"Last-Event-ID": first[0]["id"]}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        resumed = await read_events(resp, 2)
    assert [m["id"] for m in resumed] == [m["id"] for m in first[1:]]


async def test_queue_stream_starts_live_and_follows_new_events(topology, queue):
    await start_api(topology)
    old = await post_job(topology, {"type": "noop", "queue": queue})
    url = f"{topology.api_url}/events?queue={queue}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert (await resp.content.readline()).startswith(b"retry:")  # stream is open
        new = await post_job(topology, {"type": "noop", "queue": queue, "delayMs": 60_000})
        (message,) = await read_events(resp, 1)
    assert message["data"]["jobId"] == new != old
    assert message["event"] == "scheduled" and message["data"]["type"] == "noop"


async def test_bad_requests_are_problems(topology, queue):
    await start_api(topology)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{topology.api_url}/events?jobId=nope-404") as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == "job_not_found"
        headers = {"Last-Event-ID": "yesterday"}
        async with http.get(f"{topology.api_url}/events?queue={queue}",
                            headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["field"] == "Last-Event-ID"


async def test_cli_prints_a_jobs_events(topology, queue, redis_server):
    await start_api(topology)
    topology.start("worker")
    job_id = await post_job(topology, {"type": "noop", "queue": queue})
    await wait_completed(topology, job_id)
    result = await asyncio.to_thread(
        CliRunner().invoke, cli,
        ["--redis-url", redis_server.url, "events", "-q", queue, "--job", job_id, "--json"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.output.splitlines()]
    assert [line["event"] for line in lines] == ["queued", "processing", "completed"]


async def test_idle_stream_sends_heartbeats_past_the_api_deadline(
    aiohttp_client, settings, queue, monkeypatch
):
    from services.api import events as sse
    from services.api.app import create_app

    monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)
    client = await aiohttp_client(create_app(settings))
    resp = await client.get(f"/events?queue={queue}")
    assert resp.status == 200
    comments = 0
    async with asyncio.timeout(10):
        while comments < 3:  # reads return every 1 s: over 2 s, past the API's deadline
            line = await resp.content.readline()
            comments += line.startswith(b": keep-alive")
    assert (REGISTRY.get_sample_value("phoenixq_sse_clients") or 0) >= 1
    resp.close()
