"""Profile one PhoenixQ worker under load with py-spy (from benchmarks/.venv).

    .venv/bin/python -m benchmarks.profile_worker [--jobs 60000] [--seconds 8]
        [--concurrency 32] [--tree DIR]

Fills a private redis-server with no-op jobs, starts ``python -m services.worker`` on
them, samples it with ``py-spy record --format raw`` once it is past start-up, and
prints the functions with the most samples: self (the frame on top) and inclusive.
``--tree`` runs the worker from another source tree (e.g. ``git archive <rev>``
unpacked) to profile an older commit. The raw stacks are kept in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench import RESULTS, ROOT, Ctx, Server, run_adapter, start_workers, stop_workers

PY_SPY = ROOT / "benchmarks" / ".venv" / "bin" / "py-spy"


def summarise(raw: Path, top: int) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f.replace(str(ROOT) + "/", "").replace("/usr/lib/python3.11/", "")
                  for f in frames]
        frames = [re.sub(r"\S*site-packages/", "", f) for f in frames]
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"samples: {total}", "", "| self % | function (file) |", "|---:|---|"]
    lines += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in self_time.most_common(top)]
    lines += ["", "| inclusive % | function (file) |", "|---:|---|"]
    lines += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=60_000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tree", type=Path, default=None,
                        help="source tree to run the worker from (default: this one)")
    args = parser.parse_args()
    server = Server()
    ctx = Ctx(server, Path(tempfile.mkdtemp(prefix="phx-profile-")), 300)
    extra = {}
    if args.tree:
        extra = {"PYTHONPATH": f"{args.tree}:{ROOT}", "BENCH_CWD": str(args.tree)}
    raw = RESULTS / "profile-worker.raw.txt"
    try:
        server.flush()
        run_adapter(ctx, "phoenixq", "fill", str(args.jobs), **extra)
        procs = start_workers(ctx, "phoenixq", 1, args.concurrency, args.jobs, "profile", **extra)
        while server.count() < args.jobs // 20:
            time.sleep(0.01)
        started, done = time.perf_counter(), server.count()
        subprocess.run([str(PY_SPY), "record", "--pid", str(procs[0].pid), "--duration",
                        str(args.seconds), "--rate", "250", "--nonblocking", "--format", "raw",
                        "-o", str(raw)], check=True, capture_output=True)
        rate = (server.count() - done) / (time.perf_counter() - started)
        stop_workers(procs)
    finally:
        server.stop()
    print(f"worker rate while sampled: {rate:,.0f} jobs/s\n")
    print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
