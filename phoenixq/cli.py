"""The ``phoenixq`` command: run a service, bring the topology up, operate on queues and jobs.

Operator commands talk to Redis directly through ``shared.store.Store`` (the API's code
path). Output is a human-readable table by default and JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from shared.client import Client
from shared.connection import UNAVAILABLE, connect
from shared.errors import JobNotFound, ValidationError
from shared.settings import Settings, describe
from shared.store import Store

T = TypeVar("T")
SECRETS = {"PHOENIXQ_API_TOKEN"}
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


class Duration(click.ParamType):
    """``500ms``, ``5s``, ``2m``, ``1h``; a bare number is milliseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)?\s*", str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration like 500ms, 5s, 2m or 1h", param, ctx)
        return int(match.group(1)) * UNITS_MS[match.group(2) or "ms"]


# -- helpers ----------------------------------------------------------------------


def settings_of(ctx: click.Context) -> Settings:
    url = (ctx.find_root().obj or {}).get("redis_url")
    return Settings.from_env(**({"redis_url": url} if url else {}))


def run_with_store(ctx: click.Context, func: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``func(store)`` on a fresh connection; Redis errors become a clean message."""
    settings = settings_of(ctx)

    async def go() -> T:
        client = connect(settings, client_name="phx-cli")
        try:
            return await func(Store(client, settings))
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except UNAVAILABLE as exc:
        raise click.ClickException(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc


def emit_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, headers first."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def when(ms: int | None) -> str | None:
    """Epoch milliseconds as a UTC time for people (JSON output keeps the numbers)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
queue_option = click.option("--queue", "-q", default="default", show_default=True,
                            help="Queue name.")


# -- the group and the services ----------------------------------------------------


@click.group()
@click.version_option(package_name="phoenixq")
@click.option("--redis-url", envvar="REDIS_URL", default=None, metavar="URL",
              help="Redis to use (env REDIS_URL; 'make up' serves redis://127.0.0.1:6380/0).")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None) -> None:
    """PhoenixQ: crash-safe, retry-aware background jobs on Redis."""
    ctx.obj = {"redis_url": redis_url}


@main.command()
def api() -> None:
    """Run the HTTP API (PORT, default 3000)."""
    from services.api.app import main as run

    run()


@main.command()
def scheduler() -> None:
    """Run a scheduler: promotes due jobs to ready."""
    from services.scheduler import main as run

    run()


@main.command()
def worker() -> None:
    """Run a worker: claims and runs jobs (PHOENIXQ_HANDLERS, PHOENIXQ_QUEUES)."""
    from services.worker import main as run

    run()


@main.command()
def reaper() -> None:
    """Run a reaper: visibility timeouts, dead workers, retention."""
    from services.reaper import main as run

    run()


@main.command()
@click.option("--port", envvar="PORT", type=int, default=3000, show_default=True,
              help="API port (env PORT).")
@click.option("--workers", envvar="WORKERS", type=click.IntRange(min=1), default=2,
              show_default=True, help="Worker processes (env WORKERS).")
@click.option("--redis-port", envvar="REDIS_PORT", type=int, default=6380, show_default=True,
              help="Port of the private Redis (env REDIS_PORT).")
@click.option("--var-dir", type=click.Path(file_okay=False, path_type=Path), default="var",
              show_default=True, help="Where the private Redis keeps its data (var/redis).")
@click.option("--mode", type=click.Choice(["auto", "docker", "local"]), default="auto",
              show_default=True, help="auto: Docker Compose if 'docker info' works, else local.")
@click.pass_context
def up(ctx: click.Context, port: int, workers: int, redis_port: int, var_dir: Path,
       mode: str) -> None:
    """Bring up Redis, the API, the scheduler, workers and the reaper; Ctrl-C stops all."""
    from phoenixq.up import UpError, UpOptions
    from phoenixq.up import up as bring_up

    options = UpOptions(port=port, workers=workers, redis_port=redis_port, var_dir=var_dir,
                        redis_url=(ctx.obj or {}).get("redis_url") or "", mode=mode)
    try:
        ctx.exit(bring_up(options))
    except UpError as exc:
        raise click.ClickException(str(exc)) from exc


# -- jobs ---------------------------------------------------------------------------


@main.command()
@click.argument("job_type", metavar="TYPE")
@click.option("--payload", default="null", show_default=True, help="The payload, as JSON.")
@queue_option
@click.option("--delay", type=Duration(), default="0", help="Run later: 500ms, 5s, 2m, 1h.")
@click.option("--max-attempts", type=int, default=None, help="Attempts before the DLQ.")
@click.option("--idempotency-key", default=None, help="Dedup key (same key: same job).")
@json_option
@click.pass_context
def enqueue(ctx: click.Context, job_type: str, payload: str, queue: str, delay: int,
            max_attempts: int | None, idempotency_key: str | None, as_json: bool) -> None:
    """Enqueue a job of TYPE (validated exactly like POST /jobs)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None

    async def go(store: Store) -> Any:
        client = Client(settings=store.settings, redis=store.redis)
        return await client.enqueue(job_type, data, queue=queue, delay_ms=delay,
                                    max_attempts=max_attempts, idempotency_key=idempotency_key)

    try:
        res = run_with_store(ctx, go)
    except ValidationError as exc:
        raise click.ClickException(f"invalid {exc.field}: {exc.message}") from None
    if as_json:
        out = {"jobId": res.job_id, "status": res.status}
        emit_json({**out, "duplicate": True} if res.duplicate else out)
    elif res.duplicate:
        click.echo(f"Duplicate idempotency key: job {res.job_id} is {res.status}")
    else:
        click.echo(f"Enqueued job {res.job_id}: {res.status}")


TIME_FIELDS = {"createdAt", "availableAt", "startedAt", "finishedAt", "leaseUntil"}


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--queue", "-q", default=None, help="Queue to look in (default: all).")
@json_option
@click.pass_context
def job(ctx: click.Context, job_id: str, queue: str | None, as_json: bool) -> None:
    """Show a job: status, attempts, timestamps, last error, history, result."""
    try:
        found = run_with_store(ctx, lambda store: store.get_job(job_id, queue))
    except JobNotFound:
        raise click.ClickException(f"no job {job_id}") from None
    data = found.to_api()
    if as_json:
        emit_json(data)
        return
    rows = [(k, when(v) if k in TIME_FIELDS else v if isinstance(v, str | int) or v is None
             else short(v, 100)) for k, v in data.items()]
    click.echo(table(["FIELD", "VALUE"], rows))


# -- stats ----------------------------------------------------------------------------

STAT_COLUMNS = ("queued", "scheduled", "processing", "retrying", "dead", "completed")


async def collect_stats(store: Store, queue: str | None) -> list[dict[str, Any]]:
    queues = [queue] if queue else await store.queues()
    return [stats.to_api() for stats in await store.queues_stats(queues)]


def add_rates(now: list[dict[str, Any]], before: list[dict[str, Any]] | None,
              seconds: float) -> None:
    """Per-second rates of completed and dead since the previous refresh."""
    old = {s["queue"]: s["counts"] for s in before or []}
    for s in now:
        prev = old.get(s["queue"])
        s["rates"] = {
            f"{name}PerSec": None if prev is None or seconds <= 0 else
            round(max(0, s["counts"][name] - prev[name]) / seconds, 1)
            for name in ("completed", "dead")
        }


def stats_table(stats: list[dict[str, Any]]) -> str:
    rated = any("rates" in s for s in stats)
    headers = ["QUEUE", *(c.upper() for c in STAT_COLUMNS), "PAUSED", "OLDEST_MS"]
    headers += ["DONE/S", "DEAD/S"] if rated else []
    rows = []
    for s in stats:
        row = [s["queue"], *(s["counts"][c] for c in STAT_COLUMNS),
               "yes" if s["paused"] else "no", s["oldestReadyAgeMs"]]
        if rated:
            row += [s["rates"]["completedPerSec"], s["rates"]["deadPerSec"]]
        rows.append(row)
    return table(headers, rows) if rows else "no queues yet"


@main.command()
@click.option("--queue", "-q", default=None, help="One queue (default: every queue).")
@click.option("--watch", "-w", is_flag=True, help="Refresh until Ctrl-C, with rates.")
@click.option("--interval", type=float, default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", type=int, default=0, help="With --watch: stop after N refreshes.")
@json_option
@click.pass_context
def stats(ctx: click.Context, queue: str | None, watch: bool, interval: float, count: int,
          as_json: bool) -> None:
    """Jobs per queue and state (--watch: refresh, with completed/dead per second)."""
    if not watch:
        result = run_with_store(ctx, lambda store: collect_stats(store, queue))
        if as_json:
            emit_json({"queues": result})
        else:
            click.echo(stats_table(result))
        return

    async def loop(store: Store) -> None:
        before, last, n = None, time.monotonic(), 0
        while not count or n < count:
            now_stats, now = await collect_stats(store, queue), time.monotonic()
            add_rates(now_stats, before, now - last)
            show_frame(now_stats, as_json)
            before, last, n = now_stats, now, n + 1
            if not count or n < count:
                await asyncio.sleep(interval)

    try:
        run_with_store(ctx, loop)
    except KeyboardInterrupt:
        pass


def show_frame(stats: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:  # one JSON document per line while watching
        click.echo(orjson.dumps({"ts": int(time.time() * 1000), "queues": stats}).decode())
        return
    if click.get_text_stream("stdout").isatty():
        click.clear()
    click.echo(time.strftime("%H:%M:%S  ") + "phoenixq stats --watch (Ctrl-C to stop)")
    click.echo(stats_table(stats) + "\n")


# -- dead-letter queue ------------------------------------------------------------------


@main.group()
def dead() -> None:
    """The dead-letter queue: list, replay, purge."""


@dead.command("list")
@queue_option
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@click.pass_context
def dead_list(ctx: click.Context, queue: str, limit: int, as_json: bool) -> None:
    """Dead jobs of a queue, newest first, with their last error."""
    jobs, _ = run_with_store(ctx, lambda store: store.dead_jobs(queue, 0, limit))
    if as_json:
        emit_json({"queue": queue, "jobs": [j.to_api() for j in jobs]})
        return
    rows = [(j.id, j.type, f"{j.attempt}/{j.max_attempts}", when(j.finished_at),
             short(j.last_error or "", 60)) for j in jobs]
    click.echo(table(["ID", "TYPE", "ATTEMPTS", "DIED_AT (UTC)", "LAST_ERROR"], rows)
               if rows else f"no dead jobs in {queue}")


@dead.command("replay")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@queue_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Without IDs: replay this many of the oldest dead jobs.")
@json_option
@click.pass_context
def dead_replay(ctx: click.Context, ids: tuple[str, ...], queue: str, limit: int,
                as_json: bool) -> None:
    """Put dead jobs back on the ready list (the given IDs, or the oldest --limit)."""
    replayed, skipped = run_with_store(ctx, lambda s: s.replay_dead(queue, list(ids), limit))
    if as_json:
        emit_json({"queue": queue, "replayed": replayed, "skipped": skipped})
        return
    click.echo(f"Replayed {len(replayed)} job(s) of {queue}" +
               (f"; skipped {len(skipped)} not in the DLQ: {' '.join(skipped)}" if skipped else ""))


@dead.command("purge")
@queue_option
@click.option("--yes", is_flag=True, help="Really delete (required).")
@json_option
@click.pass_context
def dead_purge(ctx: click.Context, queue: str, yes: bool, as_json: bool) -> None:
    """Delete every dead job of a queue for good (needs --yes)."""
    if not yes:
        raise click.UsageError(f"purging deletes every dead job of {queue}: add --yes")

    async def go(store: Store) -> int:
        total, remaining = 0, 1
        while remaining > 0:  # purge_dead works in bounded batches
            purged, remaining = await store.purge_dead(queue)
            total += purged
            if purged == 0:
                break
        return total

    purged = run_with_store(ctx, go)
    if as_json:
        emit_json({"queue": queue, "purged": purged})
    else:
        click.echo(f"Purged {purged} dead job(s) of {queue}")


# -- reconciliation ----------------------------------------------------------------------


@main.command()
@click.option("--ids-file", type=click.File("r"), required=True,
              help="Acknowledged job ids, one per line ('-' reads stdin).")
@click.option("--queue", "-q", default=None, help="Queue to look in (default: every queue).")
@json_option
@click.pass_context
def reconcile(ctx: click.Context, ids_file: Any, queue: str | None, as_json: bool) -> None:
    """Which acknowledged jobs are gone (after a Redis crash); exit status 1 if any."""
    from shared.reconcile import format_report, read_ids
    from shared.reconcile import reconcile as run_reconcile

    ids = read_ids(ids_file)
    report = run_with_store(ctx, lambda store: run_reconcile(store, ids, queue))
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(format_report(report))
    if report.missing:
        ctx.exit(1)


# -- lifecycle events --------------------------------------------------------------------


@main.command()
@queue_option
@click.option("--job", "job_id", default=None, metavar="ID", help="Only this job's events.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new events (Ctrl-C stops).")
@json_option
@click.pass_context
def events(ctx: click.Context, queue: str, job_id: str | None, follow: bool,
           as_json: bool) -> None:
    """A queue's lifecycle events (the phx:{q}:events stream), oldest first."""
    from shared import events as ev

    async def go(store: Store) -> None:
        async for event in ev.follow(store.redis, queue, job_id=job_id, follow=follow):
            data = event.to_api()
            click.echo(orjson.dumps(data).decode() if as_json else ev.describe(event))

    try:
        run_with_store(ctx, go)
    except KeyboardInterrupt:
        pass


# -- workers and config ------------------------------------------------------------------


@main.command()
@json_option
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Live workers (from their phx:worker:<id> keys) and the jobs they are running."""
    infos = run_with_store(ctx, lambda store: store.worker_infos())
    if as_json:
        emit_json({"workers": infos})
        return
    if not infos:
        click.echo("no live workers")
        return
    rows = [(i.get("id"), i.get("host"), i.get("pid"), ",".join(i.get("queues", [])),
             i.get("concurrency"), len(i.get("running", []))) for i in infos]
    click.echo(table(["ID", "HOST", "PID", "QUEUES", "CONCURRENCY", "RUNNING"], rows))
    running = [(i.get("id"), q, job_id) for i in infos for q, job_id in i.get("running", [])]
    if running:
        click.echo("\n" + table(["WORKER", "QUEUE", "JOB"], running))


def config_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every setting: variable, current value, default, meaning (secrets masked)."""
    names = {f.metadata["env"]: f.name for f in dataclasses.fields(Settings)}
    rows = []
    for env, default, doc in describe():
        value = getattr(settings, names[env])
        if env in SECRETS and value:
            value = "***"
        rows.append({"variable": env, "value": value, "default": default, "meaning": doc})
    return rows


def config_markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, doc in describe():
        shown = f"`{default}`" if default != "" else "(empty)"
        lines.append(f"| `{env}` | {shown} | {doc} |")
    return "\n".join(lines)


@main.command()
@json_option
@click.option("--markdown", is_flag=True, help="The defaults as a Markdown table (for docs).")
@click.pass_context
def config(ctx: click.Context, as_json: bool, markdown: bool) -> None:
    """The configuration: every environment variable, its current value and default."""
    if markdown:
        click.echo(config_markdown())
        return
    try:
        rows = config_rows(settings_of(ctx))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(rows)
        return
    click.echo(table(["VARIABLE", "VALUE", "DEFAULT", "MEANING"],
                     [(r["variable"], r["value"], r["default"], r["meaning"]) for r in rows]))


if __name__ == "__main__":
    main()
