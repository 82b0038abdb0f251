"""A private ``redis-server`` on a free port, which a test may kill, pause or restart.

The server keeps its data directory for its whole life, so ``restart()`` after
``kill()`` or ``shutdown()`` reloads the same AOF; ``truncate_aof()`` simulates a
power loss that lost the file's tail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.wait import wait_until

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class RedisServer:
    def __init__(
        self, *, appendonly: bool = False, appendfsync: str = "everysec",
        maxmemory: str | None = None, port: int | None = None, extra: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"phx-redis-{self.port}-"))
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--logfile", "redis.log",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync, "--maxmemory-policy", "noeviction",
        ]
        if self.maxmemory:
            cmd += ["--maxmemory", self.maxmemory]
        return cmd + self.extra

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout=10, what=f"redis-server on {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                             capture_output=True, timeout=10)
        return out.stdout.decode().strip()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def shutdown(self) -> None:
        """A clean SHUTDOWN (flushes the AOF)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def aof_files(self) -> list[Path]:
        return sorted(p for p in (self.dir / "appendonlydir").glob("*.incr.aof"))

    def truncate_aof(self, nbytes: int) -> None:
        """Drop the last ``nbytes`` of the newest AOF file (a power loss)."""
        path = self.aof_files()[-1]
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.truncate(max(0, size - nbytes))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        time.sleep(0.02)
    raise TimeoutError(f"process {proc.pid} did not exit in {timeout}s")
