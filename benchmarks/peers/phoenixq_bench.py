"""PhoenixQ adapter: the real services, run from the project's own ``.venv``.

``work`` replaces this process with ``python -m services.worker`` (handlers from
``benchmarks.phoenixq_handlers``, ``LOG_LEVEL=INFO`` to a log file with one canonical
line per job (``PHOENIXQ_LOG_JOB_START=false``, as the speed issue specifies), every
guarantee on);
with ``BENCH_SCHEDULER=1`` it first starts ``python -m services.scheduler`` beside it.
The driver stops both with SIGTERM. Extra command: ``http N [--batch]`` enqueues
through the HTTP API (``python -m services.api``) from an aiohttp client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import BATCH, QUEUE, Adapter, due_times, main, redis_url
from shared.connection import connect
from shared.jobs import JobSpec
from shared.settings import Settings
from shared.store import Store

CONCURRENCY = Settings().concurrency  # PHOENIXQ_CONCURRENCY's default
HTTP_CONNECTIONS = 64


def _store() -> Store:
    settings = Settings.from_env(redis_url=redis_url())
    return Store(connect(settings), settings)


def _spec(job_type: str = "bench.incr", **kw: Any) -> JobSpec:
    return JobSpec(type=job_type, queue=QUEUE, **kw)


async def fill(n: int) -> None:
    store = _store()
    for first in range(0, n, 500):
        specs = [_spec().resolved(store.settings) for _ in range(min(500, n - first))]
        await store.enqueue(QUEUE, specs)
    await store.redis.aclose()


def service_env(concurrency: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(REDIS_URL=redis_url(), PHOENIXQ_HANDLERS="benchmarks.phoenixq_handlers",
               PHOENIXQ_QUEUES=QUEUE, LOG_LEVEL="INFO", PHOENIXQ_LOG_JOB_START="false")
    if concurrency is not None:
        env["PHOENIXQ_CONCURRENCY"] = str(concurrency)
    return env


def work(concurrency: int, target: int) -> None:
    env = service_env(concurrency)
    log = os.environ.get("BENCH_LOG", os.devnull)
    if os.environ.get("BENCH_SCHEDULER") == "1":
        with open(log, "ab") as out:
            subprocess.Popen([sys.executable, "-m", "services.scheduler"], env=env,
                             stdout=out, stderr=subprocess.STDOUT)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.execve(sys.executable, [sys.executable, "-m", "services.worker"], env)


async def enqueue(n: int, batch: bool) -> float:
    store = _store()
    settings = store.settings
    await store.enqueue(QUEUE, [_spec().resolved(settings)])  # connect, load scripts
    started = time.perf_counter()
    if batch:
        for first in range(0, n, BATCH):
            specs = [_spec().resolved(settings) for _ in range(min(BATCH, n - first))]
            await store.enqueue(QUEUE, specs)
    else:
        for _ in range(n):
            await store.enqueue(QUEUE, [_spec().resolved(settings)])
    elapsed = time.perf_counter() - started
    await store.redis.aclose()
    return elapsed


async def delayed(n: int, start: float) -> None:
    store = _store()
    for due in due_times(n, start):
        spec = _spec("bench.late", run_at_ms=round(due * 1000), payload={"due": due})
        await store.enqueue(QUEUE, [spec.resolved(store.settings)])
    await store.redis.aclose()


# -- HTTP ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _http(n: int, batch: bool) -> dict[str, Any]:
    import aiohttp

    port = _free_port()
    env = service_env()
    env.update(HOST="127.0.0.1", PORT=str(port))
    log = open(os.environ.get("BENCH_LOG", os.devnull), "ab")  # noqa: SIM115
    api = subprocess.Popen([sys.executable, "-m", "services.api"], env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(200):
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            job = {"type": "bench.incr", "queue": QUEUE}
            if batch:
                async with http.post(f"{base}/jobs/batch", json={"jobs": [job]}) as resp:
                    if resp.status in (404, 405):
                        return {"error": "no POST /jobs/batch route in services/api"}
                    if resp.status >= 300:
                        return {"error": f"POST /jobs/batch answered {resp.status}"}
                bodies = [{"jobs": [job] * min(BATCH, n - i)} for i in range(0, n, BATCH)]
                url = f"{base}/jobs/batch"
            else:
                bodies = [job] * n
                url = f"{base}/jobs"
            pending = iter(bodies)
            failures = 0

            async def client() -> None:
                nonlocal failures
                for body in pending:
                    async with http.post(url, json=body) as resp:
                        await resp.read()
                        failures += resp.status >= 300

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(HTTP_CONNECTIONS)))
            elapsed = time.perf_counter() - started
            if failures:
                return {"error": f"{failures} requests failed"}
            return {"seconds": elapsed, "connections": HTTP_CONNECTIONS}
    finally:
        api.terminate()
        api.wait(10)
        log.close()


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=True, has_delay=True)

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        import json

        result = asyncio.run(_http(int(sys.argv[2]), "--batch" in sys.argv))
        print(json.dumps(result), flush=True)
    else:
        main(ADAPTER)
