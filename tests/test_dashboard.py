"""The Grafana dashboard and Prometheus alerts query only metrics the services export."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/phoenixq.json"
METRIC_RE = re.compile(r"\bphoenixq_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name shared.metrics can produce (``_total``, ``_bucket``, ...)."""
    families = [f for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)
                for f in m.describe()]
    families += list(metrics.QUEUE_STATS.describe())
    return {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # rows


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return orjson.loads(DASHBOARD.read_bytes())


def test_every_panel_queries_exported_metrics(dashboard: dict[str, Any]) -> None:
    names = exported()
    for panel in panels(dashboard):
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            used = set(METRIC_RE.findall(target["expr"]))
            assert used, f"{panel['title']!r}: {target['expr']} names no PhoenixQ metric"
            assert used <= names, f"{panel['title']!r}: unknown {sorted(used - names)}"


def test_the_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    used = {m for expr in exprs for m in METRIC_RE.findall(expr)}
    assert {
        "phoenixq_jobs_completed_total",  # throughput
        "phoenixq_jobs_failed_total",  # failures
        "phoenixq_queue_jobs",  # depth and DLQ size
        "phoenixq_queue_oldest_ready_age_seconds",
        "phoenixq_job_lateness_seconds_bucket",  # lateness percentiles
        "phoenixq_job_run_duration_seconds_bucket",  # run-time percentiles
    } <= used
    variable = dashboard["templating"]["list"][0]
    assert METRIC_RE.findall(variable["definition"])[0] in exported()


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_alert_rules_query_exported_metrics() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) >= 4
    for expr in exprs:
        used = set(METRIC_RE.findall(expr))
        assert used and used <= exported(), expr


def test_prometheus_scrapes_the_ports_compose_opens() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    health_port = int(compose["x-phoenixq-env"]["PHOENIXQ_HEALTH_PORT"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["phoenixq-api"]["static_configs"][0]["targets"] == ["api:3000"]
    for name in ("scheduler", "worker", "reaper"):
        (sd,) = jobs[f"phoenixq-{name}"]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == health_port
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in panels(orjson.loads(DASHBOARD.read_bytes()))} == {uid}
