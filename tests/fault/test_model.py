"""F12: the transitions against a pure-Python model, driven by hypothesis.

Each example runs a random program of transitions (enqueue, claim, complete/fail/extend
with current and stale tokens, scheduler and reaper ticks, worker crashes, replay,
cancel, clock advances) on a real redis-server, with an explicit ``now`` so that time
is deterministic, on a fresh queue. After every step the whole queue in Redis is
compared with the model, and the invariants are checked:

* every job is in exactly one state and exactly one matching structure
  (ready | scheduled | retry | leases + processing | dead | completed; none when
  cancelled). One documented exception: an id a worker moved with BLMOVE but has not
  claimed yet sits in that worker's processing list while still ``queued`` (and stays
  there if cancelled meanwhile) until the worker's claim or the reaper's recovery
  removes it;
* ``attempt <= max_attempts``; lease tokens only grow;
* a completed job is never delivered again (nor a job whose idempotency key is done);
* a stale token is always rejected and changes nothing.

CI size: ``PHOENIXQ_MODEL_EXAMPLES`` (default 1000) examples of up to 50 steps; ``--soak``
runs ten times as many.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shared import keys
from shared.connection import connect
from shared.errors import InvalidState, StaleLease
from shared.jobs import Job, JobSpec
from shared.settings import Settings
from shared.store import Store
from tests.fault import checker

pytestmark = pytest.mark.fault

T0 = 1_700_000_000_000
WORKERS = ("w1", "w2")
IDEM_KEYS = ("k1", "k2", "k3")
BASE_MS, CAP_MS, VT_MS, WORKER_TTL_MS = 100, 1000, 5000, 1000


@dataclass
class MJob:
    id: str
    state: str
    max_attempts: int
    idem_key: str | None
    attempt: int = 0
    token: int = 0
    worker: str = ""
    due: int = 0  # scheduled / retrying: due time; processing: lease deadline
    finished: int = 0  # dead / completed: score in its sorted set


@dataclass
class Model:
    now: int = T0
    jobs: dict[str, MJob] = field(default_factory=dict)
    ready: list[str] = field(default_factory=list)  # index 0 = left (LPUSH end)
    processing: dict[str, list[str]] = field(default_factory=lambda: {w: [] for w in WORKERS})
    idem: dict[str, str] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)
    heartbeats: dict[str, int] = field(default_factory=dict)

    def zset(self, state: str) -> list[str]:
        """Ids in the sorted set of ``state``, in Redis order (score, then member)."""
        score = "finished" if state in ("dead", "completed") else "due"
        members = [j for j in self.jobs.values() if j.state == state]
        return [j.id for j in sorted(members, key=lambda j: (getattr(j, score), j.id))]

    def bury_or_retry(self, job: MJob, permanent: bool = False) -> str:
        """Mirror of lib.lua's retry_or_bury, minus the random delay (set by the caller)."""
        if permanent or job.attempt >= job.max_attempts:
            job.state, job.finished = "dead", self.now
        else:
            job.state = "retrying"
        job.worker = "" if job.state == "dead" else job.worker
        return job.state


def backoff_ceiling(attempt: int) -> int:
    return max(BASE_MS, min(CAP_MS, BASE_MS * 2 ** (max(attempt, 1) - 1)))


class QueueMachine(RuleBasedStateMachine):
    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = Settings.from_env(
            {}, redis_url=self.redis_url, backoff_base_ms=BASE_MS, backoff_cap_ms=CAP_MS,
            visibility_timeout_ms=VT_MS, worker_ttl_ms=WORKER_TTL_MS, heartbeat_ms=100,
        )
        self.client = connect(self.settings)
        self.store = Store(self.client, self.settings)
        self.q = f"model-{uuid.uuid4().hex[:10]}"
        self.m = Model()
        self.handles: list[Job] = []  # every lease ever granted: current and stale
        self.max_token: dict[str, int] = {}
        self.delivered_after_done: list[str] = []
        self.enqueued = 0

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.client.aclose())
        finally:
            self.loop.close()

    # -- rules --------------------------------------------------------------------

    @rule(delay=st.sampled_from([0, 0, 0, 500, 3000]),
          idem=st.sampled_from([None, None, *IDEM_KEYS]),
          max_attempts=st.integers(1, 3))
    def enqueue(self, delay: int, idem: str | None, max_attempts: int) -> None:
        self.enqueued += 1  # deterministic ids: hypothesis replays must draw the same
        spec = JobSpec(type="t", payload={"n": self.enqueued}, queue=self.q, delay_ms=delay,
                       id=f"job-{self.enqueued:04d}",
                       max_attempts=max_attempts, idempotency_key=idem,
                       visibility_timeout_ms=VT_MS).resolved(self.settings)
        (res,) = self.run(self.store.enqueue(self.q, [spec], now=self.m.now))
        if idem is not None and idem in self.m.idem:
            first = self.m.idem[idem]
            assert res.duplicate and res.job_id == first
            assert res.state == self.m.jobs[first].state
            return
        assert not res.duplicate and res.job_id == spec.id
        job = MJob(spec.id, "scheduled" if delay else "queued", max_attempts, idem)
        if delay:
            job.due = self.m.now + delay
        else:
            self.m.ready.insert(0, job.id)
        self.m.jobs[job.id] = job
        if idem is not None:
            self.m.idem[idem] = job.id
        assert res.state == job.state

    @precondition(lambda self: bool(self.m.ready))
    @rule(worker=st.sampled_from(WORKERS))
    def blmove(self, worker: str) -> None:
        """A worker's BLMOVE: the id is in its processing list, not yet claimed."""
        moved = self.run(self.store.wait_ready(self.q, worker, 0.1, self.client))
        expected = self.m.ready.pop()
        assert moved == expected
        self.m.processing[worker].insert(0, moved)

    @rule(worker=st.sampled_from(WORKERS), more=st.integers(0, 3))
    def claim(self, worker: str, more: int) -> None:
        m = self.m
        # ids this worker moved with BLMOVE and has not claimed, oldest move first
        pending = [i for i in reversed(m.processing[worker]) if m.jobs[i].state != "processing"]
        result = self.run(self.store.claim(self.q, worker, moved=pending, more=more, now=m.now))
        moved = list(pending)
        for _ in range(min(more, len(m.ready))):
            job_id = m.ready.pop()
            m.processing[worker].insert(0, job_id)
            moved.append(job_id)
        expect_jobs, expect_skipped = [], []
        for job_id in moved:
            job = m.jobs[job_id]
            if job.state != "queued":
                m.processing[worker].remove(job_id)
            elif job.idem_key is not None and job.idem_key in m.done:
                m.processing[worker].remove(job_id)
                job.state, job.finished = "completed", m.now
                expect_skipped.append(job_id)
            else:
                job.token += 1
                job.attempt += 1
                job.state, job.worker, job.due = "processing", worker, m.now + VT_MS
                expect_jobs.append(job_id)
        assert [j.id for j in result.jobs] == expect_jobs
        assert result.skipped == expect_skipped
        for job in result.jobs:
            mj = m.jobs[job.id]
            assert (int(job.token), job.attempt, job.state) == (mj.token, mj.attempt,
                                                                "processing")
            if mj.idem_key is not None and mj.idem_key in m.done:
                self.delivered_after_done.append(job.id)
            self.handles.append(job)

    def handle_is_current(self, handle: Job) -> bool:
        job = self.m.jobs[handle.id]
        return job.state == "processing" and job.token == int(handle.token)

    @precondition(lambda self: bool(self.handles))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.handles), label="handle")
        current = self.handle_is_current(handle)
        job = self.m.jobs[handle.id]
        try:
            self.run(self.store.complete(handle, handle.worker, {"ok": 1}, now=self.m.now))
        except StaleLease:
            assert not current, "a current token was rejected"
            return
        assert current, f"stale token {handle.token} accepted (job at {job.token}, {job.state})"
        self.m.processing[job.worker].remove(job.id)
        job.state, job.finished, job.worker = "completed", self.m.now, job.worker
        if job.idem_key is not None:
            self.m.done[job.idem_key] = job.id

    @precondition(lambda self: bool(self.handles))
    @rule(data=st.data(), permanent=st.booleans())
    def fail(self, data: st.DataObject, permanent: bool) -> None:
        handle = data.draw(st.sampled_from(self.handles), label="handle")
        current = self.handle_is_current(handle)
        job = self.m.jobs[handle.id]
        try:
            res = self.run(self.store.fail(handle, handle.worker, "boom", permanent,
                                           now=self.m.now))
        except StaleLease:
            assert not current, "a current token was rejected"
            return
        assert current, f"stale token {handle.token} accepted (job at {job.token}, {job.state})"
        self.m.processing[job.worker].remove(job.id)
        state = self.m.bury_or_retry(job, permanent)
        assert res.state == state
        if state == "retrying":
            assert BASE_MS <= res.delay_ms <= backoff_ceiling(job.attempt)
            job.due = self.m.now + res.delay_ms

    @precondition(lambda self: bool(self.handles))
    @rule(data=st.data(), length=st.sampled_from([1000, VT_MS, 20_000]))
    def extend(self, data: st.DataObject, length: int) -> None:
        handle = data.draw(st.sampled_from(self.handles), label="handle")
        current = self.handle_is_current(handle)
        try:
            deadline = self.run(self.store.extend_lease(handle, length, now=self.m.now))
        except StaleLease:
            assert not current, "a current token was rejected"
            return
        assert current, "a stale token extended a lease"
        assert deadline == self.m.now + length
        self.m.jobs[handle.id].due = deadline

    @rule()
    def scheduler_tick(self) -> None:
        m = self.m
        expected = 0
        for state in ("scheduled", "retrying"):
            for job_id in m.zset(state):
                job = m.jobs[job_id]
                if job.due <= m.now:
                    job.state = "queued"
                    m.ready.insert(0, job_id)
                    expected += 1
        res = self.run(self.store.promote_due(self.q, now=m.now))
        assert res.promoted == expected

    def absorb_failures(self, ids: list[str]) -> None:
        """Model the attempts a reaper script just failed; delays read back from Redis."""
        for job_id in ids:
            job = self.m.jobs[job_id]
            state = self.m.bury_or_retry(job)
            if state == "retrying":
                due = self.run(self.client.zscore(keys.retry(self.q), job_id))
                assert due is not None
                delay = int(due) - self.m.now
                assert BASE_MS <= delay <= backoff_ceiling(job.attempt)
                job.due = int(due)

    @rule()
    def reaper_expire(self) -> None:
        m = self.m
        overdue = [j for j in m.jobs.values() if j.state == "processing" and j.due <= m.now]
        ids = self.run(self.store.expire_leases(self.q, now=m.now))
        assert sorted(ids) == sorted(j.id for j in overdue)
        for job in overdue:
            m.processing[job.worker].remove(job.id)
        self.absorb_failures([j.id for j in sorted(overdue, key=lambda j: (j.due, j.id))])

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        deadline = self.run(self.store.heartbeat(self.q, worker, now=self.m.now))
        assert deadline == self.m.now + WORKER_TTL_MS
        self.m.heartbeats[worker] = deadline

    @rule(worker=st.sampled_from(WORKERS))
    def worker_crash(self, worker: str) -> None:
        """The reaper's recovery of ``worker`` (refused while its heartbeat is live)."""
        m = self.m
        res = self.run(self.store.recover_worker(self.q, worker, now=m.now))
        deadline = m.heartbeats.get(worker)
        if deadline is not None and deadline > m.now:
            assert res.alive
            return
        assert not res.alive
        failed, requeued = [], 0
        for job_id in reversed(m.processing[worker]):
            job = m.jobs[job_id]
            if job.state == "processing" and job.worker == worker:
                failed.append(job_id)
            elif job.state == "queued":
                m.ready.append(job_id)
                requeued += 1
        m.processing[worker] = []
        m.heartbeats.pop(worker, None)
        self.absorb_failures(failed)
        assert requeued == res.requeued
        assert res.retrying + res.dead == len(failed)

    @rule(data=st.data(), by_id=st.booleans(), limit=st.integers(1, 3))
    def replay(self, data: st.DataObject, by_id: bool, limit: int) -> None:
        m = self.m
        if by_id and m.jobs:
            ids = data.draw(st.lists(st.sampled_from(sorted(m.jobs)), max_size=2, unique=True),
                            label="ids")
            targets = [i for i in ids if m.jobs[i].state == "dead"]
        else:
            ids = []
        if not ids:  # no ids: the script replays the ``limit`` oldest dead jobs
            targets = m.zset("dead")[:limit]
        replayed, skipped = self.run(self.store.replay_dead(self.q, ids, limit, now=m.now))
        assert replayed == targets
        assert skipped == [i for i in ids if i not in targets]
        for job_id in targets:
            job = m.jobs[job_id]
            job.state, job.attempt, job.worker = "queued", 0, ""
            m.ready.insert(0, job_id)

    @precondition(lambda self: bool(self.m.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        m = self.m
        job = m.jobs[data.draw(st.sampled_from(sorted(m.jobs)), label="job")]
        cancellable = job.state in ("queued", "scheduled", "retrying")
        try:
            self.run(self.store.cancel(self.q, job.id, now=m.now))
        except InvalidState as exc:
            assert not cancellable and exc.state == job.state
            return
        assert cancellable
        if job.id in m.ready:
            m.ready.remove(job.id)
        job.state = "cancelled"

    @precondition(lambda self: bool(self.m.idem))
    @rule(key=st.sampled_from(IDEM_KEYS))
    def idempotency_window_ends(self, key: str) -> None:
        """The enqueue dedup window (a TTL) ends; the longer-lived done mark stays."""
        if key in self.m.idem:
            self.run(self.client.delete(keys.idem(self.q, key)))
            del self.m.idem[key]

    @rule(ms=st.sampled_from([1, 99, 100, 700, 1000, 5000, 30_000]))
    def advance_clock(self, ms: int) -> None:
        self.m.now += ms

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def redis_matches_model(self) -> None:
        m, q, r = self.m, self.q, self.client

        async def snapshot() -> list:
            async with r.pipeline(transaction=False) as pipe:
                pipe.lrange(keys.ready(q), 0, -1)
                for name in (keys.scheduled(q), keys.retry(q), keys.leases(q), keys.dead(q),
                             keys.completed(q)):
                    pipe.zrange(name, 0, -1, withscores=True)
                for w in WORKERS:
                    pipe.lrange(keys.processing(q, w), 0, -1)
                for job_id in m.jobs:
                    pipe.hmget(keys.job(q, job_id), "state", "attempt", "token", "max_attempts")
                return await pipe.execute()

        reply = self.run(snapshot())
        dec = [[v.decode() for v in xs] for xs in (reply[0], *reply[6:6 + len(WORKERS)])]
        ready, procs = dec[0], dict(zip(WORKERS, dec[1:], strict=True))
        zs = [{k.decode(): int(v) for k, v in z} for z in reply[1:6]]
        sched, retry, leases, dead, completed = zs
        assert ready == m.ready
        assert procs == m.processing
        by_state = {s: {j.id: j for j in m.jobs.values() if j.state == s} for s in
                    ("queued", "scheduled", "retrying", "processing", "dead", "completed",
                     "cancelled")}
        assert sched == {i: j.due for i, j in by_state["scheduled"].items()}
        assert retry == {i: j.due for i, j in by_state["retrying"].items()}
        assert leases == {i: j.due for i, j in by_state["processing"].items()}
        assert dead == {i: j.finished for i, j in by_state["dead"].items()}
        assert completed == {i: j.finished for i, j in by_state["completed"].items()}
        proc_ids = [i for w in WORKERS for i in procs[w]]
        for job_id, raw in zip(m.jobs, reply[6 + len(WORKERS):], strict=True):
            job = m.jobs[job_id]
            state, attempt, token, max_attempts = (v.decode() for v in raw)
            assert (state, int(attempt), int(token)) == (job.state, job.attempt, job.token)
            assert int(attempt) <= int(max_attempts)
            assert int(token) >= self.max_token.get(job_id, 0), "a lease token went down"
            self.max_token[job_id] = int(token)
            homes = [job_id in ready, job_id in sched, job_id in retry, job_id in leases,
                     job_id in dead, job_id in completed]
            in_proc = proc_ids.count(job_id)
            assert in_proc <= 1, f"{job_id} in {in_proc} processing lists"
            if state == "processing":
                assert homes == [False, False, False, True, False, False]
                assert job_id in procs[job.worker]
            elif state == "cancelled":
                assert sum(homes) == 0
            elif state == "queued":
                assert (sum(homes) == 0 and in_proc == 1) or homes == [True] + [False] * 5
                assert not (homes[0] and in_proc)
            else:
                assert sum(homes) == 1 and in_proc == 0, (state, homes, in_proc)
        assert not self.delivered_after_done, "a job whose key was done was delivered"


def test_transitions_match_the_model(redis_server, pytestconfig) -> None:
    soak = bool(pytestconfig.getoption("--soak"))
    examples = int(os.environ.get("PHOENIXQ_MODEL_EXAMPLES", "1000")) * (10 if soak else 1)
    QueueMachine.redis_url = redis_server.url
    started = time.monotonic()
    run_state_machine_as_test(QueueMachine, settings=settings(
        max_examples=examples, stateful_step_count=50, deadline=None,
        suppress_health_check=list(HealthCheck), print_blob=True,
    ))
    checker.publish("model", {"examples": examples, "max_steps": 50,
                              "elapsed_s": round(time.monotonic() - started, 1),
                              "violations": 0})
