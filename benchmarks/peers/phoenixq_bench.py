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
import re
import shutil
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
#: API processes for the HTTP rows (PHOENIXQ_API_PROCESSES; one per core here).
API_PROCESSES = int(os.environ.get("BENCH_API_PROCESSES", "2"))


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
    """Enqueue over HTTP: ``wrk`` when installed (it costs the 2 cores least), else an
    aiohttp client; either way the jobs that reached Redis are counted and checked."""
    import aiohttp

    port = _free_port()
    env = service_env()
    env.update(HOST="127.0.0.1", PORT=str(port), PHOENIXQ_API_PROCESSES=str(API_PROCESSES))
    log = open(os.environ.get("BENCH_LOG", os.devnull), "ab")  # noqa: SIM115
    api = subprocess.Popen([sys.executable, "-m", "services.api"], env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    job = {"type": "bench.incr", "queue": QUEUE}
    per_request = BATCH if batch else 1
    url = f"{base}/jobs/batch" if batch else f"{base}/jobs"
    body = {"jobs": [job] * BATCH} if batch else job
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            async with http.post(url, json=body) as resp:  # warm-up, and is the route there
                if resp.status >= 300:
                    return {"error": f"POST {url[len(base):]} answered {resp.status}"}
        store = _store()
        wrk = shutil.which("wrk")
        if wrk:  # warm every API process up (each has its own connections) and settle
            _wrk(url, body, 1)
            await asyncio.sleep(0.5)
        before = await store.redis.llen(f"phx:{{{QUEUE}}}:ready")
        if wrk:  # as long as n requests take at 2k/s: 5 s in full mode, 2 s at least
            result = _wrk(url, body, max(2, round(n / per_request / 2000)))
        else:
            result = await _aiohttp_load(url, body, n // per_request)
        if "error" in result:
            return result
        await asyncio.sleep(0.5)  # requests still in flight when wrk stopped
        stored = await store.redis.llen(f"phx:{{{QUEUE}}}:ready") - before
        await store.redis.aclose()
        accepted = result.pop("requests") * per_request
        if not accepted <= stored <= accepted + HTTP_CONNECTIONS * per_request:
            return {"error": f"{accepted} jobs accepted over HTTP but {stored} in Redis"}
        return {**result, "jobs": accepted, "api_processes": API_PROCESSES}
    finally:
        api.terminate()
        api.wait(10)
        log.close()


def _wrk(url: str, body: dict[str, Any], seconds: int) -> dict[str, Any]:
    """``wrk -t1 -c64`` for ``seconds``."""
    import json
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f"wrk.method = 'POST'\nwrk.body = {json.dumps(json.dumps(body))}\n"
                     "wrk.headers['Content-Type'] = 'application/json'\n")
        script.flush()
        out = subprocess.run(["wrk", "-t1", f"-c{HTTP_CONNECTIONS}", f"-d{seconds}s",
                              "-s", script.name, url], capture_output=True, text=True,
                             timeout=seconds + 60).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        return {"error": f"wrk printed no result: {out[-200:]!r}"}
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if failed or errors:
        return {"error": f"wrk: {failed.group(0) if failed else errors.group(0)}"}  # type: ignore[union-attr]
    elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    return {"seconds": elapsed, "requests": int(done.group(1)), "client": "wrk",
            "connections": HTTP_CONNECTIONS}


async def _aiohttp_load(url: str, body: dict[str, Any], requests: int) -> dict[str, Any]:
    """``requests`` POSTs kept 64 in flight by an aiohttp client (when wrk is missing)."""
    import aiohttp

    failures = 0
    pending = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def client() -> None:
            nonlocal failures
            for _ in pending:
                async with http.post(url, json=body) as resp:
                    await resp.read()
                    failures += resp.status >= 300

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(HTTP_CONNECTIONS)))
        elapsed = time.perf_counter() - started
    if failures:
        return {"error": f"{failures} requests failed"}
    return {"seconds": elapsed, "requests": requests, "client": "aiohttp",
            "connections": HTTP_CONNECTIONS}


ADAPTER = Adapter(fill=fill, work=work, enqueue=enqueue, delayed=delayed,
                  concurrency=CONCURRENCY, has_batch=True, has_delay=True)

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        import json

        result = asyncio.run(_http(int(sys.argv[2]), "--batch" in sys.argv))
        print(json.dumps(result), flush=True)
    else:
        main(ADAPTER)
