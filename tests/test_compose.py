"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("api", "scheduler", "worker", "reaper")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_topology_has_redis_and_the_four_services(compose: dict[str, Any]) -> None:
    default = {n for n, s in compose["services"].items() if not s.get("profiles")}
    assert default == {"redis", *SERVICES}


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_its_cli_command_from_the_one_image(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["command"] == ["phoenixq", name]
    assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert service["image"] == "phoenixq:local"
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_shares_the_environment_anchor(
    compose: dict[str, Any], name: str
) -> None:
    shared = compose["x-phoenixq-env"]
    env = compose["services"][name]["environment"]
    assert env.items() >= shared.items()
    assert env["REDIS_URL"] == "redis://redis:6379/0"


def test_redis_is_durable_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    args = redis["command"]
    assert args[0] == "redis-server"
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["restart"] == "unless-stopped"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_api_publishes_port_3000_and_checks_healthz(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["ports"] == ["${PORT:-3000}:3000"]
    assert api["environment"]["PORT"] == "3000"
    check = " ".join(api["healthcheck"]["test"])
    assert "http://127.0.0.1:3000/healthz" in check


def test_two_worker_replicas_by_default(compose: dict[str, Any]) -> None:
    assert compose["services"]["worker"]["deploy"]["replicas"] == 2


def test_monitoring_profile_adds_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        assert compose["services"][name]["profiles"] == ["monitoring"]


def test_dockerfile_is_slim_non_root_and_installs_with_pip() -> None:
    lines = [ln.strip() for ln in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any(ln.startswith("RUN pip install .") for ln in lines)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'CMD ["phoenixq", "api"]' in lines
