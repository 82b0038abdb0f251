"""Real PhoenixQ service processes (``python -m services.<name>``) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import orjson

from tests.harness.ports import free_port
from tests.harness.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
#: The log line each service writes once its signal handlers are installed.
READY_LINES = {
    "api": "API listening",
    "worker": "Worker starting",
    "scheduler": "Scheduler starting",
    "reaper": "Reaper starting",
}


class ServiceProcess:
    """One service process; its JSON log lines are collected in ``lines``."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread
        self.log_path = Path(tempfile.mkstemp(prefix=f"phx-{name}-", suffix=".log")[1])

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("a") as sink:
            for raw in self.proc.stdout:
                text = raw.decode(errors="replace").rstrip("\n")
                sink.write(text + "\n")
                self.raw.append(text)
                try:
                    self.lines.append(orjson.loads(text))
                except orjson.JSONDecodeError:
                    pass

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, event: str) -> list[dict]:
        return [line for line in list(self.lines) if line.get("event") == event]

    def wait_log(self, event: str, timeout: float = 15.0, **fields: object) -> dict:
        def found() -> dict | None:
            for line in list(self.lines):
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            return None

        return wait_until(found, timeout, what=f"{self.name} log {event!r} {fields}")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                assert self.proc is not None
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.close()

    def close(self) -> None:
        """Release the pipe once the process has exited and its output is read."""
        if self.proc is not None and self.proc.poll() is not None:
            self._reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class Topology:
    """Starts and tracks service processes sharing one Redis and one environment."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.api_port = free_port()
        self.env = {
            "REDIS_URL": redis_url,
            "PORT": str(self.api_port),
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "PHOENIXQ_HEARTBEAT_MS": "300",
            "PHOENIXQ_WORKER_TTL_MS": "1500",
            "PHOENIXQ_REAPER_INTERVAL_MS": "200",
            "PHOENIXQ_BACKOFF_BASE_MS": "200",
            "PHOENIXQ_SHUTDOWN_GRACE_MS": "5000",
            **env,
        }
        self.procs: list[ServiceProcess] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, name: str, **env: str) -> ServiceProcess:
        proc = ServiceProcess(name, {**self.env, **env}).start()
        self.procs.append(proc)
        ready = READY_LINES[name]
        wait_until(lambda: proc.events(ready) or not proc.alive(), 15,
                   what=f"{name} to log {ready!r}")
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        for proc in self.procs:  # shown by pytest only when the test failed
            print(f"== {proc.name} (pid {proc.pid}) log tail:", *proc.raw[-15:], sep="\n")
