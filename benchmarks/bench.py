"""PhoenixQ vs its peers on one private redis-server: ``python -m benchmarks.bench [--quick]``.

Run from the project's ``.venv`` (``make bench``). PhoenixQ is measured from that
interpreter; the peers from ``benchmarks/.venv`` (created from
``benchmarks/requirements-peers.txt`` on first use). Each system has one adapter module,
``benchmarks/peers/<system>_bench.py``, with the CLI described in ``benchmarks/common.py``;
this driver runs them as subprocesses, watches the shared counter every 5 ms, and prints
one markdown table of medians, every figure also as a ratio to PhoenixQ's in the same
run. See docs/performance.md for what each row means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import COUNTER, LATENESS

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PEERS_VENV = BENCH / ".venv"
PEERS_PY = PEERS_VENV / "bin" / "python"
RESULTS = BENCH / "results"
SYSTEMS = ["phoenixq", "saq", "arq", "rq", "dramatiq", "taskiq", "celery", "bullmq"]
LABELS = {"phoenixq": "PhoenixQ", "saq": "SAQ", "arq": "arq", "rq": "RQ (SimpleWorker)",
          "dramatiq": "Dramatiq", "taskiq": "taskiq (redis streams)", "celery": "Celery",
          "bullmq": "BullMQ (Python)"}
PACKAGES = {"saq": "saq", "arq": "arq", "rq": "rq", "dramatiq": "dramatiq",
            "taskiq": "taskiq", "celery": "celery", "bullmq": "bullmq"}
POLL_S = 0.005
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Full mode runs 20,000 jobs per throughput run, so that even the fastest system's
#: steady window lasts seconds; these systems run 200-350 jobs/s here and get fewer.
SLOW_SYSTEMS_N = {"arq": 6000, "rq": 6000}
STEADY_FROM = 0.05  # steady rate: from the first poll at >= 5% done to the last job


class BenchError(Exception):
    """A measurement that could not be made; its message becomes ``n/a (...)``."""


# -- the server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A private redis-server on a free port (no persistence unless ``appendfsync``)."""

    def __init__(self, appendfsync: str | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"phx-bench-{self.port}-"))
        self.appendfsync = appendfsync
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.dir), "--save", "", "--logfile", "redis.log",
               "--appendonly", "yes" if appendfsync else "no"]
        if appendfsync:
            cmd += ["--appendfsync", appendfsync]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        self.client.flushall()
        self.client.script_flush()

    def count(self) -> int:
        return int(self.client.get(COUNTER) or 0)

    def cpu_s(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- running adapters -------------------------------------------------------------------


@dataclass
class Ctx:
    server: Server
    logdir: Path
    timeout_s: float

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env.update(BENCH_REDIS_URL=self.server.url, PYTHONPATH=str(ROOT),
                   PYTHONUNBUFFERED="1")
        env.update(extra)
        return env


def python_for(system: str) -> Path:
    return Path(sys.executable) if system == "phoenixq" else PEERS_PY


def adapter_cmd(system: str, *args: str) -> list[str]:
    return [str(python_for(system)), "-m", f"benchmarks.peers.{system}_bench", *args]


def run_adapter(ctx: Ctx, system: str, *args: str, timeout: float | None = None,
                **env: str) -> dict[str, Any]:
    try:
        out = subprocess.run(adapter_cmd(system, *args), cwd=env.get("BENCH_CWD", ROOT),
                             env=ctx.env(**env),
                             capture_output=True, timeout=timeout or ctx.timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{args[0]} timed out") from None
    lines = out.stdout.decode().strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = (out.stderr.decode().strip().splitlines() or ["exit " + str(out.returncode)])[-1]
        raise BenchError(f"{args[0]} failed: {tail[:120]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise BenchError(result["error"])
    return result


def start_workers(ctx: Ctx, system: str, count: int, concurrency: int, target: int,
                  tag: str, **env: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(count):
        log = ctx.logdir / f"{system}-{tag}-{i}.log"
        with log.open("ab") as out:
            procs.append(subprocess.Popen(
                adapter_cmd(system, "work", "--concurrency", str(concurrency),
                            "--target", str(target)),
                cwd=env.get("BENCH_CWD", ROOT), env=ctx.env(BENCH_LOG=str(log), **env),
                stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGKILL)  # the group: prefork children, a scheduler
        proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_count(ctx: Ctx, target: int, procs: list[subprocess.Popen[bytes]], timeout: float,
               on_poll: Callable[[int, float], None] | None = None) -> float:
    """Poll the counter every 5 ms until ``target``; returns the perf_counter time."""
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        value = ctx.server.count()
        if on_poll is not None:
            on_poll(value, now)
        if value >= target:
            return now
        if now > deadline:
            raise BenchError(f"timeout: {value}/{target} done in {timeout:.0f}s")
        if procs and all(p.poll() is not None for p in procs):
            raise BenchError(f"worker exited after {value}/{target} jobs")
        time.sleep(POLL_S)


# -- measurements -----------------------------------------------------------------------


def throughput(ctx: Ctx, system: str, n: int, workers: int, concurrency: int) -> dict[str, float]:
    ctx.server.flush()
    run_adapter(ctx, system, "fill", str(n))
    cpu0 = ctx.server.cpu_s()
    first = math.ceil(n * STEADY_FROM)
    mark: dict[str, float] = {}

    def on_poll(value: int, now: float) -> None:
        if value >= first and "t5" not in mark:
            mark["t5"], mark["c5"] = now, value
            mark["w5"], mark["r5"] = workers_cpu_s(procs), ctx.server.cpu_s()

    t0 = time.perf_counter()
    procs = start_workers(ctx, system, workers, concurrency, n, f"w{workers}")
    try:
        t_end = wait_count(ctx, n, procs, ctx.timeout_s, on_poll)
        cpu1, wcpu1 = ctx.server.cpu_s(), workers_cpu_s(procs)
        time.sleep(0.2)
        final = ctx.server.count()
    finally:
        stop_workers(procs)
    span = t_end - mark["t5"]
    steady = (n - mark["c5"]) / span if span > 0 else math.nan
    worker_s, redis_s = wcpu1 - mark["w5"], cpu1 - mark["r5"]
    return {"steady": steady, "total": n / (t_end - t0),
            "redis_cpu": (cpu1 - cpu0) / (t_end - t0),
            "worker_cpu_us": 1e6 * worker_s / (n - mark["c5"]),
            "cores_busy": (worker_s + redis_s) / span if span > 0 else math.nan,
            "extra_runs": final - n}


def workers_cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user + system) of every process in the workers' process groups.

    Each worker starts its own session, so this counts prefork children and threads
    too; ``cutime``/``cstime`` keep the share of children that already exited.
    """
    groups = {p.pid for p in procs}
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) in groups:
            total += sum(int(f) for f in fields[11:15])
    return total / CLOCK_TICKS


def enqueue_rate(ctx: Ctx, system: str, n: int, batch: bool) -> float:
    ctx.server.flush()
    args = ["enqueue", str(n)] + (["--batch"] if batch else [])
    return n / float(run_adapter(ctx, system, *args)["seconds"])


def http_rate(ctx: Ctx, n: int, batch: bool, notes: set[str]) -> float:
    ctx.server.flush()
    args = ["http", str(n)] + (["--batch"] if batch else [])
    out = run_adapter(ctx, "phoenixq", *args)
    notes.add(f"- PhoenixQ HTTP rows: load from `{out['client']}` ({out['connections']} "
              f"connections) against {out['api_processes']} API process(es) "
              "(`PHOENIXQ_API_PROCESSES`); every accepted job was counted in Redis")
    return float(out["jobs"]) / float(out["seconds"])


def lateness(ctx: Ctx, system: str, n: int, concurrency: int) -> dict[str, float]:
    ctx.server.flush()
    env = {"BENCH_SCHEDULER": "1"} if system == "phoenixq" else {}
    procs = start_workers(ctx, system, 1, concurrency, n + 1, "delayed", **env)
    try:
        run_adapter(ctx, system, "fill", "1")  # warm-up: the worker is up once this ran
        wait_count(ctx, 1, procs, 60)
        start = time.time() + 2.0
        run_adapter(ctx, system, "delayed", str(n), "--start", f"{start:.6f}")
        wait_count(ctx, n + 1, procs, 60)
    finally:
        stop_workers(procs)
    values = sorted(float(v) for v in ctx.server.client.lrange(LATENESS, 0, -1))
    if len(values) != n:
        raise BenchError(f"{len(values)} lateness records for {n} jobs")
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": values[-1]}


def percentile(sorted_values: list[float], pct: float) -> float:
    k = (len(sorted_values) - 1) * pct / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def redis_benchmark(server: Server, n: int, pipeline: int) -> dict[str, float]:
    out = subprocess.run(
        ["redis-benchmark", "-p", str(server.port), "-t", "set,get,lpush,lpop", "-q",
         "-n", str(n), "-P", str(pipeline)], capture_output=True, timeout=300, check=True)
    text = out.stdout.decode().replace("\r", "\n")
    rates = {m.group(1).upper(): float(m.group(2))
             for m in re.finditer(r"^(\w+): ([\d.]+) requests per second", text, re.M)}
    if not rates:
        raise BenchError("no redis-benchmark output")
    return rates


def commands_per_job(ctx: Ctx, n: int) -> dict[str, Any]:
    """PhoenixQ's Redis commands per job, attributed with MONITOR (client vs inside Lua)."""
    server = ctx.server
    driver = str(server.client.client_info()["addr"])
    result: dict[str, Any] = {}
    for phase in ("enqueue", "work"):
        server.flush()
        if phase == "work":
            run_adapter(ctx, "phoenixq", "fill", str(n))
        path = ctx.logdir / f"monitor-{phase}.txt"
        with path.open("wb") as out:
            monitor = subprocess.Popen(["redis-cli", "-p", str(server.port), "monitor"],
                                       stdout=out, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            server.client.config_resetstat()
            if phase == "enqueue":
                run_adapter(ctx, "phoenixq", "enqueue", str(n))
                jobs = n + 1  # the adapter's untimed first enqueue
            else:
                procs = start_workers(ctx, "phoenixq", 1, 16, n, "monitor")
                try:
                    wait_count(ctx, n, procs, ctx.timeout_s)
                finally:
                    stop_workers(procs)
                jobs = n
            stats = server.client.info("commandstats")
            time.sleep(0.3)
            monitor.terminate()
            monitor.wait()
        client_calls: Counter[str] = Counter()
        lua_calls: Counter[str] = Counter()
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
            if not m or m.group(1) == driver:  # not the driver's own polling
                continue
            (lua_calls if m.group(1) == "lua" else client_calls)[m.group(2).lower()] += 1
        for ignored in ("info", "config|resetstat", "config", "ping", "flushall", "script"):
            client_calls.pop(ignored, None)
        stat_total = sum(v["calls"] for k, v in stats.items()
                         if k not in ("cmdstat_info", "cmdstat_config|resetstat"))
        result[phase] = {
            "jobs": jobs,
            "round_trips": sum(client_calls.values()) / jobs,
            "in_scripts": sum(lua_calls.values()) / jobs,
            "commandstats_total": stat_total / jobs,
            "client": {k: round(v / jobs, 3) for k, v in client_calls.most_common()},
            "lua": {k: round(v / jobs, 3) for k, v in lua_calls.most_common()},
        }
    return result


# -- orchestration ----------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    systems: list[str]
    reps: int
    n: int
    n_enqueue: int
    n_batch: int
    n_http: int
    n_delayed: int
    n_monitor: int
    rb_n: int
    two_workers: bool
    delayed_systems: list[str]
    aof: bool
    timeout_s: float
    concurrency: dict[str, int] = field(default_factory=dict)
    n_by_system: dict[str, int] = field(default_factory=dict)  # overrides of n

    def n_for(self, system: str) -> int:
        return self.n_by_system.get(system, self.n)


@dataclass
class Results:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)

    def add(self, row: str, system: str, value: float) -> None:
        self.samples.setdefault((row, system), []).append(value)

    def fail(self, row: str, system: str, reason: str) -> None:
        self.errors.setdefault((row, system), reason)

    def median(self, row: str, system: str) -> float | None:
        values = [v for v in self.samples.get((row, system), []) if not math.isnan(v)]
        return statistics.median(values) if values else None


def measure(results: Results, rows: list[str], system: str, func: Callable[[], Any]) -> None:
    """Run one measurement; record every row it yields, or n/a with the reason."""
    try:
        value = func()
    except BenchError as exc:
        for row in rows:
            results.fail(row, system, str(exc))
        print(f"  {system}: n/a ({exc})", flush=True)
        return
    values = dict(value) if isinstance(value, dict) else {rows[0]: value}
    extra_runs = values.pop("extra_runs", 0)
    if extra_runs:
        results.notes.add(f"- {LABELS[system]}: the counter ended {extra_runs:g} above N "
                          f"in a '{rows[0]}' run (a job ran more than once); kept")
    for row, v in values.items():
        results.add(row, system, v)
    shown = ", ".join(f"{k}={v:,.1f}" for k, v in values.items())
    print(f"  {system}: {shown}", flush=True)


ROWS_1W = ["1 worker: steady jobs/s", "1 worker: total jobs/s (incl. start-up)",
           "1 worker: Redis CPU busy (fraction of one core)",
           "1 worker: worker CPU per job (µs, all its processes; lower is better)"]
ROWS_2W = ["2 workers: steady jobs/s", "2 workers: total jobs/s (incl. start-up)",
           "2 workers: CPU busy, workers + Redis (cores)"]
ROW_ENQ = "enqueue, single, one client (jobs/s)"
ROW_BATCH = "enqueue, batch API of 100 (jobs/s)"
ROW_HTTP = "enqueue over HTTP: POST /jobs, 64 connections, 2 API processes (jobs/s)"
ROW_HTTP_BATCH = "enqueue over HTTP: POST /jobs/batch of 100, 2 API processes (jobs/s)"
ROWS_LATE = ["delayed: lateness p50 (ms)", "delayed: lateness p99 (ms)",
             "delayed: lateness max (ms)"]
ROW_AOF = {"everysec": "1 worker, AOF everysec: steady jobs/s",
           "always": "1 worker, AOF always: steady jobs/s"}


def _as_rows(rows: list[str], keys: list[str]) -> Callable[[dict[str, float]], dict[str, float]]:
    def convert(d: dict[str, float]) -> dict[str, float]:
        out = {row: d[k] for row, k in zip(rows, keys, strict=True)}
        out["extra_runs"] = d.get("extra_runs", 0)
        return out

    return convert


def run_plan(plan: Plan, logdir: Path) -> Results:
    results = Results()
    server = Server()
    ctx = Ctx(server, logdir, plan.timeout_s)
    conc = plan.concurrency
    tp_rows = _as_rows(ROWS_1W, ["steady", "total", "redis_cpu", "worker_cpu_us"])
    tp2_rows = _as_rows(ROWS_2W, ["steady", "total", "cores_busy"])
    late_rows = _as_rows(ROWS_LATE, ["p50", "p99", "max"])
    try:
        for rep in range(plan.reps):
            print(f"== repetition {rep + 1}/{plan.reps}", flush=True)
            print(f"-- throughput, 1 worker, N={plan.n} (or per system)", flush=True)
            for s in plan.systems:
                measure(results, ROWS_1W, s, lambda s=s: tp_rows(
                    throughput(ctx, s, plan.n_for(s), 1, conc[s])))
            if plan.two_workers:
                print(f"-- throughput, 2 workers, N={plan.n} (or per system)", flush=True)
                for s in plan.systems:
                    measure(results, ROWS_2W, s, lambda s=s: tp2_rows(
                        throughput(ctx, s, plan.n_for(s), 2, conc[s])))
            print(f"-- enqueue, single ({plan.n_enqueue}) and batch ({plan.n_batch})",
                  flush=True)
            for s in plan.systems:
                measure(results, [ROW_ENQ], s, lambda s=s: enqueue_rate(
                    ctx, s, plan.n_enqueue, False))
                measure(results, [ROW_BATCH], s, lambda s=s: enqueue_rate(
                    ctx, s, plan.n_batch, True))
            if "phoenixq" in plan.systems:
                print(f"-- HTTP enqueue ({plan.n_http})", flush=True)
                measure(results, [ROW_HTTP], "phoenixq", lambda: http_rate(
                    ctx, plan.n_http, False, results.notes))
                measure(results, [ROW_HTTP_BATCH], "phoenixq", lambda: http_rate(
                    ctx, plan.n_http, True, results.notes))
            if plan.delayed_systems:
                print(f"-- delayed jobs ({plan.n_delayed} over 2 s)", flush=True)
                for s in plan.delayed_systems:
                    measure(results, ROWS_LATE, s, lambda s=s: late_rows(
                        lateness(ctx, s, plan.n_delayed, conc[s])))
        if "phoenixq" in plan.systems:
            print("-- Redis ceiling: redis-benchmark", flush=True)
            server.flush()
            results.extra["redis_benchmark"] = {
                "unpipelined": redis_benchmark(server, plan.rb_n, 1),
                "pipelined_16": redis_benchmark(server, plan.rb_n, 16),
            }
            print(f"  {results.extra['redis_benchmark']}", flush=True)
            print(f"-- PhoenixQ Redis commands per job (MONITOR, N={plan.n_monitor})",
                  flush=True)
            try:
                results.extra["commands"] = commands_per_job(ctx, plan.n_monitor)
                print(f"  work: {results.extra['commands']['work']['round_trips']:.2f} "
                      f"round trips/job", flush=True)
            except BenchError as exc:
                results.extra["commands_error"] = str(exc)
    finally:
        server.stop()
    if plan.aof and "phoenixq" in plan.systems:
        for fsync, row in ROW_AOF.items():
            print(f"-- PhoenixQ, 1 worker, AOF {fsync}", flush=True)
            aof = Server(appendfsync=fsync)
            actx = Ctx(aof, logdir, plan.timeout_s)
            try:
                for _ in range(plan.reps):
                    measure(results, [row], "phoenixq", lambda actx=actx: throughput(
                        actx, "phoenixq", plan.n_for("phoenixq"), 1, conc["phoenixq"])["steady"])
            finally:
                aof.stop()
    return results


# -- report -----------------------------------------------------------------------------


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(plan: Plan, results: Results) -> str:
    systems = plan.systems
    head = "| measurement | " + " | ".join(LABELS[s] for s in systems) + " |"
    lines = [head, "|---|" + "---:|" * len(systems)]
    lines.append("| concurrency per worker process | "
                 + " | ".join(str(plan.concurrency.get(s, "?")) for s in systems) + " |")
    lines.append("| jobs per throughput run (N) | "
                 + " | ".join(f"{plan.n_for(s):,}" for s in systems) + " |")
    rows = [*ROWS_1W]
    if plan.two_workers:
        rows += ROWS_2W
    rows += [ROW_ENQ, ROW_BATCH, ROW_HTTP, ROW_HTTP_BATCH]
    if plan.delayed_systems:
        rows += ROWS_LATE
    if plan.aof:
        rows += list(ROW_AOF.values())
    for row in rows:
        base = results.median(row, "phoenixq")
        if row in ROW_AOF.values():
            base = results.median(ROWS_1W[0], "phoenixq")  # ratio to no persistence
        cells = []
        for s in systems:
            value = results.median(row, s)
            if value is None:
                reason = results.errors.get((row, s))
                if reason is None:
                    cells.append("—")
                else:
                    cells.append(f"n/a ({reason})")
            elif base:
                cells.append(f"{fmt(value)} ({value / base:.2f}x)")
            else:
                cells.append(fmt(value))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ceiling_rows(plan, results)
    return "\n".join(lines)


def ceiling_rows(plan: Plan, results: Results) -> list[str]:
    rb = results.extra.get("redis_benchmark")
    cmds = results.extra.get("commands")
    pad = " | —" * (len(plan.systems) - 1)
    out = []
    if rb:
        for key, label in (("unpipelined", "unpipelined"), ("pipelined_16", "pipelined -P 16")):
            rates = rb[key]
            shown = ", ".join(f"{k} {fmt(v)}" for k, v in rates.items())
            out.append(f"| Redis ceiling: redis-benchmark {label} (ops/s) | {shown}{pad} |")
    if cmds:
        w, e = cmds["work"], cmds["enqueue"]
        out.append(f"| PhoenixQ Redis calls per job, worker: round trips / commands incl. "
                   f"inside Lua | {w['round_trips']:.2f} / "
                   f"{w['round_trips'] + w['in_scripts']:.2f}{pad} |")
        out.append(f"| PhoenixQ Redis calls per job, single enqueue: round trips / "
                   f"commands incl. inside Lua | {e['round_trips']:.2f} / "
                   f"{e['round_trips'] + e['in_scripts']:.2f}{pad} |")
        steady = results.median(ROWS_1W[0], "phoenixq")
        if rb and steady:
            unp = statistics.mean(rb["unpipelined"].values())
            pip = statistics.mean(rb["pipelined_16"].values())
            rt = steady * w["round_trips"]
            total = steady * (w["round_trips"] + w["in_scripts"])
            out.append(f"| PhoenixQ share of Redis capacity, 1 worker: round trips/s vs "
                       f"unpipelined ops/s; commands/s vs pipelined ops/s | "
                       f"{fmt(rt)} / {fmt(unp)} = {rt / unp:.1%}; {fmt(total)} / "
                       f"{fmt(pip)} = {total / pip:.1%}{pad} |")
    return out


def command_breakdown(results: Results) -> str:
    cmds = results.extra.get("commands")
    if not cmds:
        return results.extra.get("commands_error", "")
    lines = ["| phase | round trips/job (by command) | commands inside Lua/job | "
             "INFO commandstats calls/job |", "|---|---|---|---:|"]
    for phase, d in cmds.items():
        client = ", ".join(f"{k} {v:g}" for k, v in d["client"].items())
        lua = ", ".join(f"{k} {v:g}" for k, v in d["lua"].items())
        lines.append(f"| {phase} | {d['round_trips']:.2f}: {client} | "
                     f"{d['in_scripts']:.2f}: {lua} | {d['commandstats_total']:.2f} |")
    return "\n".join(lines)


def versions(plan: Plan) -> list[str]:
    out = [f"- PhoenixQ {git_rev()} on Python {platform.python_version()} ({sys.executable})"]
    rs = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    out.append(f"- {rs.stdout.strip()}")
    out.append(f"- redis-py (PhoenixQ) {redis.__version__}")
    peers = [s for s in plan.systems if s != "phoenixq"]
    if peers and PEERS_PY.exists():
        names = [PACKAGES[s] for s in peers] + ["redis", "hiredis", "taskiq-redis"]
        code = ("import importlib.metadata as m, platform, json; print(json.dumps("
                "[platform.python_version()] + [[n, m.version(n)] for n in " + repr(names) + "]))")
        got = subprocess.run([str(PEERS_PY), "-c", code], capture_output=True, text=True)
        if got.returncode == 0:
            data = json.loads(got.stdout)
            out.append(f"- peers' Python {data[0]} (benchmarks/.venv): "
                       + ", ".join(f"{n} {v}" for n, v in data[1:]))
    return out


def git_rev() -> str:
    got = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True)
    return got.stdout.strip() or "?"


def report(plan: Plan, results: Results, command: str, seconds: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if plan.quick else "full"
    notes = sorted({f"- {LABELS[s]}: {reason}" for (_, s), reason in results.errors.items()}
                   | results.notes)
    parts = [
        f"# PhoenixQ benchmark — {when} ({mode} mode)", "",
        f"Command: `{command}` — took {seconds / 60:.1f} min.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}. "
        "**A shared virtual machine**: absolute numbers drift between runs (the host's load "
        "changes), so the ratios (x, relative to PhoenixQ in the same run) are the "
        "figures to compare.", "",
        f"Medians of {plan.reps} repetition(s). Throughput: N = {plan.n:,} pre-filled no-op "
        "jobs (fewer for the slowest systems: the N row; one INCR each; the final count is "
        "verified), steady = jobs after the first "
        f"5% / time from 5% to 100% done, total = N / time from starting the worker "
        f"process(es) to the last job. Enqueue: {plan.n_enqueue:,} single, "
        f"{plan.n_batch:,} batched; HTTP: {plan.n_http:,}. Delayed: {plan.n_delayed:,} "
        "jobs due evenly over 2 s, lateness = handler start - due time. Redis: a private "
        "redis-server, no persistence except the AOF rows; flushed between runs. "
        "Higher is better except lateness.", "",
        table(plan, results), "",
        "## PhoenixQ's Redis commands per job (MONITOR, client calls vs calls inside Lua)", "",
        command_breakdown(results), "",
        "## Notes", "",
        *(notes or ["- none"]), "",
        "## Versions", "", *versions(plan), "",
    ]
    return "\n".join(parts)


def ensure_peers_venv() -> str | None:
    """Create benchmarks/.venv from requirements-peers.txt if missing; None when usable."""
    if PEERS_PY.exists():
        return None
    print("creating benchmarks/.venv from benchmarks/requirements-peers.txt ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-q", "-r",
                        str(BENCH / "requirements-peers.txt")], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"benchmarks/.venv could not be created: {exc}"
    return None


def build_plan(args: argparse.Namespace) -> Plan:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}; known: {SYSTEMS}")
    if args.quick:
        plan = Plan(quick=True, systems=systems, reps=args.reps or 1, n=args.n or 2000,
                    n_enqueue=500, n_batch=2000, n_http=500, n_delayed=300, n_monitor=500,
                    rb_n=20_000, two_workers=False,
                    delayed_systems=[s for s in systems if s == "phoenixq"], aof=False,
                    timeout_s=60)
    else:
        plan = Plan(quick=False, systems=systems, reps=args.reps or 3, n=args.n or 20_000,
                    n_enqueue=3000, n_batch=10_000, n_http=10_000, n_delayed=1000,
                    n_monitor=2000, rb_n=100_000, two_workers=True,
                    delayed_systems=list(systems),
                    aof=not args.no_aof, timeout_s=180,
                    n_by_system={} if args.n else dict(SLOW_SYSTEMS_N))
    return plan


def adapter_info(system: str) -> dict[str, Any]:
    try:
        info = subprocess.run(adapter_cmd(system, "info"), cwd=ROOT, capture_output=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        raise BenchError("adapter did not load in 120 s") from None
    if info.returncode != 0 or not info.stdout.strip():
        raise BenchError(f"adapter does not load: {info.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(info.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="under two minutes: fewer jobs, 1 repetition, fewer rows")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma-separated subset of: " + ",".join(SYSTEMS))
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3; quick 1)")
    parser.add_argument("--n", type=int, default=0, help="jobs per throughput run")
    parser.add_argument("--concurrency", action="append", default=[], metavar="SYSTEM=C",
                        help="override a system's worker concurrency")
    parser.add_argument("--no-aof", action="store_true", help="skip the AOF rows")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; write nothing to benchmarks/results/")
    args = parser.parse_args(argv)
    plan = build_plan(args)
    overrides = {k: int(v) for k, v in (o.split("=", 1) for o in args.concurrency)}
    results = Results()
    peers = [s for s in plan.systems if s != "phoenixq"]
    problem = ensure_peers_venv() if peers else None
    usable = []
    for s in plan.systems:
        try:
            if problem and s != "phoenixq":
                raise BenchError(problem)
            info = adapter_info(s)
            plan.concurrency[s] = overrides.get(s, int(info["concurrency"]))
            usable.append(s)
            if s in plan.delayed_systems and not info["delay"]:
                plan.delayed_systems.remove(s)
                for row in ROWS_LATE:
                    results.errors[(row, s)] = "no per-job delay API"
        except BenchError as exc:
            print(f"  {s}: n/a ({exc})", flush=True)
            plan.concurrency[s] = 0
            results.errors[(ROWS_1W[0], s)] = str(exc)
    started = time.perf_counter()
    logdir = Path(tempfile.mkdtemp(prefix="phx-bench-logs-"))
    print(f"logs: {logdir}", flush=True)
    run = Plan(**{**plan.__dict__, "systems": usable,
                  "delayed_systems": [s for s in plan.delayed_systems if s in usable]})
    measured = run_plan(run, logdir)
    measured.errors.update(results.errors)
    command = "make bench" + (f" ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
    text = report(plan, measured, command, time.perf_counter() - started)
    print()
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = "-quick" if plan.quick else ""
        (RESULTS / f"{stamp}{suffix}.md").write_text(text)
        (RESULTS / "latest.md").write_text(text)
        raw = {"samples": {f"{r} | {s}": v for (r, s), v in measured.samples.items()},
               "errors": {f"{r} | {s}": v for (r, s), v in measured.errors.items()},
               "extra": measured.extra}
        (RESULTS / "latest.json").write_text(json.dumps(raw, indent=1))
        print(f"\nwritten: benchmarks/results/{stamp}{suffix}.md and latest.md")


if __name__ == "__main__":
    main()
