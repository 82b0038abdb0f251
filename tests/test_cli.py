"""The ``phoenixq`` CLI (click's CliRunner) against the session's real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from click.testing import CliRunner, Result

from phoenixq.cli import config_markdown, main
from shared.connection import connect
from shared.jobs import JobSpec
from shared.settings import Settings, describe
from shared.store import Store

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]

def phx(settings: Settings, *args: str, code: int = 0, env: dict | None = None) -> Result:
    result = CliRunner().invoke(main, ["--redis-url", settings.redis_url, *args], env=env)
    assert result.exit_code == code, result.output
    return result


def phx_json(settings: Settings, *args: str) -> dict:
    return orjson.loads(phx(settings, *args, "--json").output)


def with_store(settings: Settings, coro_fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``coro_fn(store)`` on its own connection and loop (the tests here are sync)."""

    async def go() -> T:
        client = connect(settings)
        try:
            return await coro_fn(Store(client, settings))
        finally:
            await client.aclose()

    return asyncio.run(go())


def make_dead(settings: Settings, queue: str, n: int) -> list[str]:
    """Enqueue ``n`` jobs, claim them and fail them permanently: ``n`` dead jobs."""
    async def go(store: Store) -> list[str]:
        ids = []
        for i in range(n):
            ids += [r.job_id for r in await store.enqueue(
                queue, [_spec(settings, queue, i)])]
        claimed = await store.claim(queue, "cli-test-worker", more=n)
        for job in claimed.jobs:
            await store.fail(job, "cli-test-worker", "boom: broken on purpose", permanent=True)
        return ids

    return with_store(settings, go)


def _spec(settings: Settings, queue: str, i: int) -> JobSpec:
    return JobSpec("fail.permanent", {"i": i}, queue=queue).resolved(settings)


# -- enqueue and job ---------------------------------------------------------------


def test_enqueue_then_show_the_job(settings: Settings, queue: str) -> None:
    out = phx(settings, "enqueue", "email.send", "--payload", '{"to": "a@b.c"}', "-q", queue)
    assert out.output.startswith("Enqueued job ") and out.output.strip().endswith(": queued")
    job_id = out.output.split()[2].rstrip(":")
    shown = phx_json(settings, "job", job_id)
    assert (shown["jobId"], shown["status"], shown["payload"]) == (job_id, "queued",
                                                                  {"to": "a@b.c"})
    table = phx(settings, "job", job_id, "--queue", queue).output
    assert "status" in table and "queued" in table and "email.send" in table


def test_enqueue_json_with_delay_and_attempts(settings: Settings, queue: str) -> None:
    res = phx_json(settings, "enqueue", "noop", "-q", queue, "--delay", "2m",
                   "--max-attempts", "7")
    assert res["status"] == "scheduled" and "duplicate" not in res
    job = phx_json(settings, "job", res["jobId"])
    assert job["maxAttempts"] == 7
    assert job["availableAt"] - job["createdAt"] == 120_000


def test_enqueue_with_a_used_idempotency_key_returns_the_first_job(
    settings: Settings, queue: str
) -> None:
    first = phx_json(settings, "enqueue", "noop", "-q", queue, "--idempotency-key", "k1")
    again = phx(settings, "enqueue", "noop", "-q", queue, "--idempotency-key", "k1").output
    assert again.startswith("Duplicate idempotency key") and first["jobId"] in again


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--payload", "{nope"], 2, "not valid JSON"),
    (["--delay", "soon"], 2, "not a duration"),
    (["--max-attempts", "0"], 1, "invalid maxAttempts"),
    (["--queue", "bad queue"], 1, "invalid queue"),
])
def test_enqueue_rejects_bad_input(
    settings: Settings, queue: str, args: list[str], code: int, message: str
) -> None:
    out = phx(settings, "enqueue", "noop", "-q", queue, *args, code=code).output
    assert message in out


def test_unknown_job_is_an_error(settings: Settings) -> None:
    assert "no job nope" in phx(settings, "job", "nope", code=1).output


def test_unreachable_redis_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["--redis-url", "redis://127.0.0.1:1/0", "stats"])
    assert result.exit_code == 1 and "cannot reach Redis" in result.output


# -- stats --------------------------------------------------------------------------


def test_stats_counts_per_state(settings: Settings, queue: str) -> None:
    phx(settings, "enqueue", "noop", "-q", queue)
    phx(settings, "enqueue", "noop", "-q", queue, "--delay", "1h")
    (stats,) = phx_json(settings, "stats", "-q", queue)["queues"]
    assert stats["queue"] == queue
    assert stats["counts"] == {"queued": 1, "scheduled": 1, "processing": 0,
                                    "retrying": 0, "dead": 0, "completed": 0}
    table = phx(settings, "stats", "-q", queue).output.splitlines()
    assert table[0].split()[:3] == ["QUEUE", "QUEUED", "SCHEDULED"]
    assert table[1].split()[:3] == [queue, "1", "1"]


def test_stats_of_all_queues_lists_this_one(settings: Settings, queue: str) -> None:
    phx(settings, "enqueue", "noop", "-q", queue)
    assert queue in [s["queue"] for s in phx_json(settings, "stats")["queues"]]


def test_stats_watch_prints_frames_with_rates(settings: Settings, queue: str) -> None:
    make_dead(settings, queue, 1)
    out = phx(settings, "stats", "-q", queue, "--watch", "--count", "2", "--interval", "0.05",
              "--json").output
    frames = [orjson.loads(line) for line in out.splitlines()]
    assert len(frames) == 2
    assert frames[0]["queues"][0]["rates"] == {"completedPerSec": None, "deadPerSec": None}
    assert frames[1]["queues"][0]["rates"] == {"completedPerSec": 0.0, "deadPerSec": 0.0}
    human = phx(settings, "stats", "-q", queue, "-w", "--count", "1", "--interval", "0").output
    assert "DONE/S" in human and "DEAD/S" in human


# -- dead-letter queue ------------------------------------------------------------------


def test_dead_list_replay_purge(settings: Settings, queue: str) -> None:
    ids = make_dead(settings, queue, 3)
    listed = phx_json(settings, "dead", "list", "-q", queue)["jobs"]
    assert sorted(j["jobId"] for j in listed) == sorted(ids)
    assert all(j["lastError"].startswith("boom") for j in listed)
    assert "boom: broken on purpose" in phx(settings, "dead", "list", "-q", queue).output

    out = phx(settings, "dead", "replay", ids[0], "missing-id", "-q", queue).output
    assert "Replayed 1 job(s)" in out and "missing-id" in out
    assert phx_json(settings, "job", ids[0])["status"] == "queued"

    assert "--yes" in phx(settings, "dead", "purge", "-q", queue, code=2).output
    assert phx_json(settings, "dead", "purge", "-q", queue, "--yes")["purged"] == 2
    assert phx(settings, "dead", "list", "-q", queue).output.startswith("no dead jobs")


def test_dead_replay_without_ids_takes_the_oldest(settings: Settings, queue: str) -> None:
    make_dead(settings, queue, 2)
    assert len(phx_json(settings, "dead", "replay", "-q", queue)["replayed"]) == 2


# -- workers and config -------------------------------------------------------------------


def test_workers_shows_live_workers_and_their_jobs(settings: Settings, queue: str) -> None:
    long_lived = dataclasses.replace(settings, worker_ttl_ms=60_000)
    worker_id = f"w-{queue}"
    info = {"id": worker_id, "host": "h1", "pid": 42, "queues": [queue], "concurrency": 4,
            "running": [[queue, "job-1"]]}
    with_store(long_lived, lambda store: store.set_worker_info(worker_id, info))
    try:
        listed = phx_json(settings, "workers")["workers"]
        assert info in listed
        table = phx(settings, "workers").output
        assert worker_id in table and "job-1" in table
    finally:
        with_store(settings, lambda store: store.delete_worker_info(worker_id))
    assert worker_id not in phx(settings, "workers").output


def test_config_shows_every_setting_with_its_current_value(settings: Settings) -> None:
    env = {"PHOENIXQ_CONCURRENCY": "7", "PHOENIXQ_API_TOKEN": "s3cret"}
    rows = orjson.loads(phx(settings, "config", "--json", env=env).output)
    by_var = {r["variable"]: r for r in rows}
    assert list(by_var) == [env_name for env_name, _, _ in describe()]
    assert by_var["PHOENIXQ_CONCURRENCY"]["value"] == 7
    assert by_var["PHOENIXQ_CONCURRENCY"]["default"] == Settings().concurrency
    assert by_var["PHOENIXQ_API_TOKEN"]["value"] == "***"
    assert by_var["REDIS_URL"]["value"] == settings.redis_url
    text = phx(settings, "config", env=env).output
    assert "s3cret" not in text and "PHOENIXQ_HANDLERS" in text


def test_config_markdown_lists_every_variable(settings: Settings) -> None:
    text = phx(settings, "config", "--markdown").output
    for env_name, _, doc in describe():
        assert f"| `{env_name}` |" in text and doc in text


# -- the README stays true ------------------------------------------------------------------


def test_readme_config_table_is_generated_from_describe() -> None:
    """Regenerate with `phoenixq config --markdown` when a setting changes."""
    assert config_markdown() in (ROOT / "README.md").read_text()


def test_readme_handler_example_is_the_shipped_module() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing handlers", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = (ROOT / "examples" / "handlers.py").read_text()
    assert block.strip() == module.split('"""', 2)[2].strip()
