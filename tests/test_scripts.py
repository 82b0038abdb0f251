"""Each Lua transition on a real redis-server: seed the keys, run it, assert every key."""

from __future__ import annotations

import orjson
import pytest

from shared import keys
from shared.errors import InvalidState, JobNotFound, StaleLease
from shared.jobs import JobSpec
from shared.settings import Settings
from shared.store import Store

T0 = 1_700_000_000_000
W = "w1"


async def put(store: Store, queue: str, *specs: JobSpec, now: int = T0) -> list[str]:
    resolved = [s.resolved(store.settings) for s in specs]
    res = await store.enqueue(queue, resolved, now=now)
    return [r.job_id for r in res]


def spec(queue: str, **kw: object) -> JobSpec:
    return JobSpec(type=kw.pop("type", "t"), payload=kw.pop("payload", {"n": 1}), queue=queue,
                   **kw)  # type: ignore[arg-type]


async def state(store: Store, queue: str, job_id: str) -> str:
    return (await store.redis.hget(keys.job(queue, job_id), "state")).decode()


async def zmembers(store: Store, key: str) -> dict[str, float]:
    return {k.decode(): v for k, v in await store.redis.zrange(key, 0, -1, withscores=True)}


async def lmembers(store: Store, key: str) -> list[str]:
    return [v.decode() for v in await store.redis.lrange(key, 0, -1)]


async def events(store: Store, queue: str) -> list[str]:
    entries = await store.redis.xrange(keys.events(queue))
    return [f[b"event"].decode() for _, f in entries]


# -- enqueue --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("extra", "expected_state", "in_ready", "due"),
    [
        ({}, "queued", True, T0),
        ({"delay_ms": 5000}, "scheduled", False, T0 + 5000),
        ({"run_at_ms": T0 + 9000}, "scheduled", False, T0 + 9000),
        ({"run_at_ms": T0 - 9000}, "queued", True, T0),
    ],
)
async def test_enqueue_places_job(store, queue, extra, expected_state, in_ready, due):
    (job_id,) = await put(store, queue, spec(queue, **extra))
    job = await store.get_job(job_id, queue)
    assert job.state == expected_state
    assert job.available_at == due
    assert job.attempt == 0 and job.token == "0"
    assert (job_id in await lmembers(store, keys.ready(queue))) is in_ready
    sched = await zmembers(store, keys.scheduled(queue))
    assert (sched == {job_id: due}) is (not in_ready)
    assert await events(store, queue) == [expected_state]
    assert queue in await store.queues()


async def test_enqueue_idempotency_key_returns_first_job(store, queue):
    (first,) = await put(store, queue, spec(queue, idempotency_key="order-1"))
    res = await store.enqueue(queue, [spec(queue, idempotency_key="order-1").resolved(
        store.settings)], now=T0)
    assert res[0].job_id == first and res[0].duplicate and res[0].state == "queued"
    assert await lmembers(store, keys.ready(queue)) == [first]
    ttl = await store.redis.pttl(keys.idem(queue, "order-1"))
    assert 0 < ttl <= store.settings.idempotency_ttl_ms


async def test_enqueue_sent_twice_writes_once(store, queue):
    job = spec(queue).resolved(store.settings)
    first = await store.enqueue(queue, [job], now=T0)
    again = await store.enqueue(queue, [job], now=T0 + 5)  # a retried call, same job id
    assert (first[0].duplicate, again[0].duplicate) == (False, True)
    assert again[0].job_id == job.id and again[0].state == "queued"
    assert await lmembers(store, keys.ready(queue)) == [job.id]
    assert (await store.get_job(job.id, queue)).created_at == T0


async def test_enqueue_batch_is_in_order_and_dedups_within_batch(store, queue):
    specs = [spec(queue, idempotency_key="k"), spec(queue), spec(queue, idempotency_key="k")]
    res = await store.enqueue(queue, [s.resolved(store.settings) for s in specs], now=T0)
    assert [r.duplicate for r in res] == [False, False, True]
    assert res[2].job_id == res[0].job_id
    assert await lmembers(store, keys.ready(queue)) == [res[1].job_id, res[0].job_id]


# -- promote_due ------------------------------------------------------------------------

async def test_promote_due_moves_only_due_jobs_and_reports_next(store, queue):
    a, b, c = await put(store, queue, spec(queue, delay_ms=100), spec(queue, delay_ms=200),
                        spec(queue, delay_ms=900))
    res = await store.promote_due(queue, now=T0 + 250)
    assert (res.promoted, res.next_due_ms, res.now_ms) == (2, T0 + 900, T0 + 250)
    assert await lmembers(store, keys.ready(queue)) == [b, a]  # a runs first (RIGHT end)
    assert await zmembers(store, keys.scheduled(queue)) == {c: T0 + 900}
    assert await state(store, queue, a) == "queued"
    assert await state(store, queue, c) == "scheduled"


async def test_promote_due_respects_limit_and_drops_cancelled(store, queue):
    ids = await put(store, queue, *[spec(queue, delay_ms=10) for _ in range(5)])
    await store.cancel(queue, ids[0], now=T0)
    res = await store.promote_due(queue, limit=2, now=T0 + 50)
    assert res.promoted == 2
    res = await store.promote_due(queue, limit=10, now=T0 + 50)
    assert res.promoted == 2 and res.next_due_ms is None
    assert len(await lmembers(store, keys.ready(queue))) == 4
    assert await state(store, queue, ids[0]) == "cancelled"


async def test_promote_twice_never_promotes_twice(store, queue):
    await put(store, queue, *[spec(queue, delay_ms=10) for _ in range(20)])
    first = await store.promote_due(queue, now=T0 + 20)
    second = await store.promote_due(queue, now=T0 + 20)
    assert (first.promoted, second.promoted) == (20, 0)
    assert len(await lmembers(store, keys.ready(queue))) == 20


# -- claim ---------------------------------------------------------------------------

async def test_claim_leases_with_fresh_token_and_counts_attempt(store, queue):
    a, b, c = await put(store, queue, spec(queue), spec(queue), spec(queue))
    res = await store.claim(queue, W, more=2, now=T0 + 10)
    assert [j.id for j in res.jobs] == [a, b]
    job = res.jobs[0]
    assert (job.state, job.attempt, job.token, job.worker) == ("processing", 1, "1", W)
    assert job.started_at == T0 + 10 and job.lease_until == T0 + 10 + job.visibility_timeout_ms
    stored = await store.get_job(a, queue)  # the reply is the record as written, field by field
    fields = ("state", "attempt", "token", "worker", "started_at", "lease_until", "payload",
              "max_attempts", "created_at", "available_at", "idempotency_key")
    assert {f: getattr(job, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    assert await lmembers(store, keys.processing(queue, W)) == [b, a]
    assert await lmembers(store, keys.ready(queue)) == [c]
    assert await zmembers(store, keys.leases(queue)) == {
        a: T0 + 10 + job.visibility_timeout_ms, b: T0 + 10 + job.visibility_timeout_ms}


async def test_claim_takes_ids_moved_by_blmove(store, queue):
    (a,) = await put(store, queue, spec(queue))
    blocking = store.redis
    moved = await store.wait_ready(queue, W, 0.1, blocking)
    assert moved == a
    assert await lmembers(store, keys.processing(queue, W)) == [a]
    res = await store.claim(queue, W, [a], more=0, now=T0)
    assert [j.id for j in res.jobs] == [a]


async def test_claim_skips_job_whose_key_is_done(store, queue):
    (a,) = await put(store, queue, spec(queue, idempotency_key="pay-1"))
    await store.redis.set(keys.done(queue, "pay-1"), "earlier-job")
    res = await store.claim(queue, W, more=1, now=T0)
    assert res.jobs == [] and res.skipped == [a]
    job = await store.get_job(a, queue)
    assert job.state == "completed" and job.attempt == 0
    assert await lmembers(store, keys.processing(queue, W)) == []
    assert a in await zmembers(store, keys.completed(queue))


async def test_claim_when_paused_hands_ids_back(store, queue):
    (a,) = await put(store, queue, spec(queue))
    await store.pause(queue)
    moved = await store.wait_ready(queue, W, 0.1, store.redis)
    res = await store.claim(queue, W, [moved], more=5, now=T0)
    assert res.paused and res.jobs == []
    assert await lmembers(store, keys.ready(queue)) == [a]
    assert await lmembers(store, keys.processing(queue, W)) == []
    await store.resume(queue)
    assert [j.id for j in (await store.claim(queue, W, more=5)).jobs] == [a]


async def test_claim_drops_ids_that_are_no_longer_queued(store, queue):
    (a,) = await put(store, queue, spec(queue))
    moved = await store.wait_ready(queue, W, 0.1, store.redis)
    await store.redis.hset(keys.job(queue, a), "state", "cancelled")
    res = await store.claim(queue, W, [moved], more=0)
    assert res.jobs == [] and await lmembers(store, keys.processing(queue, W)) == []


# -- complete ------------------------------------------------------------------------

async def claim_one(store: Store, queue: str, now: int = T0 + 1, **extra: object):
    await put(store, queue, spec(queue, **extra))
    (job,) = (await store.claim(queue, W, more=1, now=now)).jobs
    return job


async def test_complete_writes_result_mark_and_retention(store, queue):
    job = await claim_one(store, queue, idempotency_key="mail-7")
    await store.complete(job, W, {"ok": True}, now=T0 + 50)
    done = await store.get_job(job.id, queue)
    assert (done.state, done.result, done.finished_at) == ("completed", {"ok": True}, T0 + 50)
    assert await zmembers(store, keys.completed(queue)) == {job.id: T0 + 50}
    assert await zmembers(store, keys.leases(queue)) == {}
    assert await lmembers(store, keys.processing(queue, W)) == []
    assert (await store.redis.get(keys.done(queue, "mail-7"))).decode() == job.id
    assert await store.redis.pttl(keys.job(queue, job.id)) > 0
    assert await events(store, queue) == ["queued", "processing", "completed"]


async def test_complete_without_key_sets_no_mark(store, queue):
    job = await claim_one(store, queue)
    await store.complete(job, W, None)
    assert await store.redis.keys(keys.done_prefix(queue) + "*") == []


@pytest.mark.parametrize("tamper", ["token", "state"])
async def test_complete_with_stale_lease_is_rejected(store, queue, tamper):
    job = await claim_one(store, queue)
    if tamper == "token":
        await store.redis.hincrby(keys.job(queue, job.id), "token", 1)
    else:
        await store.redis.hset(keys.job(queue, job.id), "state", "retrying")
    with pytest.raises(StaleLease):
        await store.complete(job, W, {"late": True})
    after = await store.get_job(job.id, queue)
    assert after.result is None and after.state != "completed"
    assert await zmembers(store, keys.completed(queue)) == {}


async def test_complete_unknown_job(store, queue):
    job = await claim_one(store, queue)
    await store.redis.delete(keys.job(queue, job.id))
    with pytest.raises(JobNotFound):
        await store.complete(job, W, None)


# -- fail ----------------------------------------------------------------------------

async def test_fail_schedules_retry_with_bounded_backoff(store, queue):
    job = await claim_one(store, queue, max_attempts=3, backoff_base_ms=1000,
                          backoff_cap_ms=60_000)
    res = await store.fail(job, W, "boom", now=T0 + 100)
    assert res.state == "retrying" and res.delay_ms == 1000  # attempt 1: exactly base
    after = await store.get_job(job.id, queue)
    assert (after.state, after.last_error, after.available_at) == ("retrying", "boom",
                                                                   T0 + 1100)
    assert after.history[0]["attempt"] == 1 and after.history[0]["error"] == "boom"
    assert await zmembers(store, keys.retry(queue)) == {job.id: T0 + 1100}
    assert await zmembers(store, keys.leases(queue)) == {}
    assert await lmembers(store, keys.processing(queue, W)) == []


async def test_backoff_grows_and_is_capped(store, queue):
    job = await claim_one(store, queue, max_attempts=10, backoff_base_ms=100,
                          backoff_cap_ms=500)
    delays = []
    for n in range(1, 7):
        await store.redis.hset(keys.job(queue, job.id), "attempt", n)
        await store.redis.hset(keys.job(queue, job.id), "state", "processing")
        delays.append((await store.fail(job, W, "x", now=T0)).delay_ms)
    assert delays[0] == 100
    assert all(100 <= d <= min(500, 100 * 2 ** (i)) for i, d in enumerate(delays))
    assert max(delays) <= 500


async def test_fail_last_attempt_goes_dead(store, queue):
    job = await claim_one(store, queue, max_attempts=1)
    res = await store.fail(job, W, "final", now=T0 + 5)
    assert res.state == "dead"
    assert await zmembers(store, keys.dead(queue)) == {job.id: T0 + 5}
    assert await zmembers(store, keys.retry(queue)) == {}
    assert (await store.get_job(job.id, queue)).last_error == "final"


async def test_fail_permanent_skips_retries(store, queue):
    job = await claim_one(store, queue, max_attempts=5)
    res = await store.fail(job, W, "bad input", permanent=True)
    assert res.state == "dead" and (await store.get_job(job.id, queue)).attempt == 1


async def test_fail_with_stale_token_is_rejected(store, queue):
    job = await claim_one(store, queue)
    await store.redis.hincrby(keys.job(queue, job.id), "token", 1)
    with pytest.raises(StaleLease):
        await store.fail(job, W, "late")
    assert await state(store, queue, job.id) == "processing"


# -- extend_lease / requeue ----------------------------------------------------------

async def test_extend_lease_moves_deadline(store, queue):
    job = await claim_one(store, queue)
    deadline = await store.extend_lease(job, 10_000, now=T0 + 500)
    assert deadline == T0 + 10_500
    assert await zmembers(store, keys.leases(queue)) == {job.id: T0 + 10_500}
    await store.redis.hincrby(keys.job(queue, job.id), "token", 1)
    with pytest.raises(StaleLease):
        await store.extend_lease(job, 10_000)


async def test_requeue_hands_back_without_charging_attempt(store, queue):
    job = await claim_one(store, queue)
    await store.requeue(queue, job.id, W, job.token)
    after = await store.get_job(job.id, queue)
    assert (after.state, after.attempt) == ("queued", 0)
    assert await lmembers(store, keys.ready(queue)) == [job.id]
    assert await zmembers(store, keys.leases(queue)) == {}
    assert await lmembers(store, keys.processing(queue, W)) == []


# -- expire_leases ---------------------------------------------------------------------

async def test_expire_leases_retries_then_buries(store, queue):
    job = await claim_one(store, queue, max_attempts=2, visibility_timeout_ms=1000)
    assert await store.expire_leases(queue, now=T0 + 500) == []
    assert await store.expire_leases(queue, now=T0 + 2000) == [job.id]
    after = await store.get_job(job.id, queue)
    assert after.state == "retrying" and "lease expired" in after.last_error
    assert await lmembers(store, keys.processing(queue, W)) == []
    await store.promote_due(queue, now=T0 + 10_000)
    (again,) = (await store.claim(queue, W, more=1, now=T0 + 10_000)).jobs
    assert again.attempt == 2 and again.token == "2"
    assert await store.expire_leases(queue, now=T0 + 20_000) == [again.id]
    assert await state(store, queue, job.id) == "dead"
    with pytest.raises(StaleLease):  # the first attempt's late completion
        await store.complete(job, W, "late")


# -- recover_worker ------------------------------------------------------------------

async def test_recover_worker_takes_back_claimed_and_unclaimed(store, queue):
    await store.heartbeat(queue, W, now=T0)
    claimed = await claim_one(store, queue, now=T0 + 1)
    (unclaimed,) = await put(store, queue, spec(queue))
    assert await store.wait_ready(queue, W, 0.1, store.redis) == unclaimed
    assert (await store.recover_worker(queue, W, now=T0 + 10)).alive  # deadline ahead
    res = await store.recover_worker(queue, W, now=T0 + 60_000)
    assert (res.alive, res.retrying, res.dead, res.requeued) == (False, 1, 0, 1)
    assert await state(store, queue, claimed.id) == "retrying"
    assert await state(store, queue, unclaimed) == "queued"
    assert await lmembers(store, keys.ready(queue)) == [unclaimed]
    assert await store.redis.exists(keys.processing(queue, W)) == 0
    assert await zmembers(store, keys.workers(queue)) == {}
    assert await zmembers(store, keys.leases(queue)) == {}


async def test_recover_worker_twice_finds_nothing_the_second_time(store, queue):
    await store.heartbeat(queue, W, now=T0)
    await claim_one(store, queue, now=T0 + 1)
    first = await store.recover_worker(queue, W, now=T0 + 60_000)
    second = await store.recover_worker(queue, W, now=T0 + 60_000)  # a racing reaper
    assert (first.found, first.retrying) == (True, 1)
    assert (second.found, second.retrying, second.alive) == (False, 0, False)


async def test_dead_workers_uses_deadlines(store, queue):
    await store.heartbeat(queue, "a", now=T0)
    await store.heartbeat(queue, "b", now=T0 + 10_000)
    ttl = store.settings.worker_ttl_ms
    assert await store.dead_workers(queue, T0 + ttl + 1) == ["a"]


# -- cancel / replay / trim ----------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, {"delay_ms": 1000}])
async def test_cancel_waiting_job(store, queue, extra):
    (a,) = await put(store, queue, spec(queue, **extra))
    await store.cancel(queue, a)
    assert await state(store, queue, a) == "cancelled"
    assert await lmembers(store, keys.ready(queue)) == []
    assert await zmembers(store, keys.scheduled(queue)) == {}


async def test_cancel_running_job_is_refused(store, queue):
    job = await claim_one(store, queue)
    with pytest.raises(InvalidState) as err:
        await store.cancel(queue, job.id)
    assert err.value.state == "processing"
    with pytest.raises(JobNotFound):
        await store.cancel(queue, "nope")


async def test_replay_dead_resets_attempts_and_keeps_history(store, queue):
    job = await claim_one(store, queue, max_attempts=1)
    await store.fail(job, W, "boom")
    replayed, skipped = await store.replay_dead(queue, [job.id, "not-dead"])
    assert (replayed, skipped) == ([job.id], ["not-dead"])
    after = await store.get_job(job.id, queue)
    assert (after.state, after.attempt, after.replays) == ("queued", 0, 1)
    assert len(after.history) == 1
    assert await zmembers(store, keys.dead(queue)) == {}
    assert await lmembers(store, keys.ready(queue)) == [job.id]
    assert await store.replay_dead(queue, [job.id]) == ([], [job.id])  # idempotent


async def test_trim_retention_forgets_old_and_caps_dlq(redis_server, queue):
    from shared.connection import connect

    settings = Settings.from_env({}, redis_url=redis_server.url, completed_retention_ms=1000,
                                 dead_retention_ms=5000, dead_max=2)
    client = connect(settings)
    store = Store(client, settings)
    try:
        done = await claim_one(store, queue, now=T0)
        await store.complete(done, W, None, now=T0)
        dead = []
        for i in range(4):
            job = await claim_one(store, queue, now=T0, max_attempts=1)
            await store.fail(job, W, "x", now=T0 + i)
            dead.append(job.id)
        assert await store.trim_retention(queue, now=T0 + 500) == (0, 2)  # cap: oldest two
        assert set(await zmembers(store, keys.dead(queue))) == set(dead[2:])
        assert await store.redis.exists(keys.job(queue, dead[0])) == 0
        assert await store.trim_retention(queue, now=T0 + 6000) == (1, 2)
        assert await store.redis.exists(keys.job(queue, done.id)) == 0
    finally:
        await client.aclose()


async def test_stats_count_every_state(store, queue):
    await put(store, queue, spec(queue), spec(queue), spec(queue, delay_ms=10_000))
    job = await claim_one(store, queue)
    await store.fail(job, W, "x")
    stats = await store.queue_stats(queue)
    assert (stats.queued, stats.scheduled, stats.retrying, stats.processing) == (2, 1, 1, 0)
    assert stats.oldest_ready_age_ms is not None


async def test_payload_roundtrip_is_exact(store, queue):
    payload = {"s": "héllo", "n": [1, 2.5, None, True], "deep": {"a": {"b": "c"}}}
    (a,) = await put(store, queue, spec(queue, payload=payload))
    raw = await store.redis.hget(keys.job(queue, a), "payload")
    assert orjson.loads(raw) == payload
