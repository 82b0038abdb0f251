"""phoenixq.Client and phoenixq.SyncClient against the session's real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import phoenixq
from shared.settings import Settings
from shared.store import Store


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[phoenixq.Client]:
    async with phoenixq.Client(settings=settings) as c:
        yield c


async def test_enqueue_returns_id_and_status_and_stores_the_job(
    client: phoenixq.Client, queue: str
) -> None:
    res = await client.enqueue("email.send", {"to": "a@b.c"}, queue=queue, max_attempts=3)
    assert res.status == "queued" and not res.duplicate
    job = await client.get_job(res.job_id)
    assert (job.type, job.queue, job.payload, job.max_attempts) == (
        "email.send", queue, {"to": "a@b.c"}, 3)
    assert job.state == "queued"


async def test_delay_schedules_the_job(client: phoenixq.Client, queue: str, store: Store) -> None:
    res = await client.enqueue("noop", queue=queue, delay_ms=60_000)
    assert res.status == "scheduled"
    assert (await store.queue_stats(queue)).scheduled == 1


async def test_same_idempotency_key_returns_the_first_job(
    client: phoenixq.Client, queue: str
) -> None:
    first = await client.enqueue("noop", queue=queue, idempotency_key="order-1")
    again = await client.enqueue("noop", {"other": 1}, queue=queue, idempotency_key="order-1")
    assert again.duplicate and again.job_id == first.job_id


@pytest.mark.parametrize("options", [
    {"queue": "bad queue"}, {"max_attempts": 0}, {"delay_ms": -1},
    {"idempotency_key": ""}, {"backoff_base_ms": 10, "backoff_cap_ms": 5},
])
async def test_invalid_options_raise_like_the_api(
    client: phoenixq.Client, queue: str, options: dict
) -> None:
    with pytest.raises(phoenixq.ValidationError):
        await client.enqueue("noop", **{"queue": queue, **options})


async def test_payload_must_be_json(client: phoenixq.Client, queue: str) -> None:
    with pytest.raises(phoenixq.ValidationError, match="payload"):
        await client.enqueue("noop", {"when": object()}, queue=queue)


async def test_enqueue_many_keeps_order_across_queues(
    client: phoenixq.Client, queue: str, store: Store
) -> None:
    other = f"{queue}-b"
    specs = [phoenixq.JobSpec("noop", 1, queue=queue), phoenixq.JobSpec("noop", 2, queue=other),
             phoenixq.JobSpec("noop", 3, queue=queue, delay_ms=5000)]
    results = await client.enqueue_many(specs)
    assert [r.job_id for r in results] == [s.id for s in specs]
    assert [r.status for r in results] == ["queued", "queued", "scheduled"]
    assert (await client.get_job(specs[1].id)).queue == other


async def test_enqueue_many_validates_everything_before_writing(
    client: phoenixq.Client, queue: str, store: Store
) -> None:
    specs = [phoenixq.JobSpec("noop", queue=queue), phoenixq.JobSpec("bad type", queue=queue)]
    with pytest.raises(phoenixq.ValidationError):
        await client.enqueue_many(specs)
    assert (await store.queue_stats(queue)).queued == 0


async def test_get_job_of_unknown_id_raises(client: phoenixq.Client, queue: str) -> None:
    with pytest.raises(phoenixq.JobNotFound):
        await client.get_job("no-such-job", queue)


async def test_client_reads_redis_url(settings: Settings, queue: str) -> None:
    async with phoenixq.Client(settings.redis_url) as c:
        assert c.settings.redis_url == settings.redis_url
        assert (await c.enqueue("noop", queue=queue)).status == "queued"


def test_sync_client_for_scripts(settings: Settings, queue: str) -> None:
    with phoenixq.SyncClient(settings=settings) as c:
        res = c.enqueue("email.send", {"to": "x@y.z"}, queue=queue)
        assert c.get_job(res.job_id).payload == {"to": "x@y.z"}
        many = c.enqueue_many([phoenixq.JobSpec("noop", queue=queue)])
        assert many[0].status == "queued"
