"""A master, its replicas and three Sentinels, as real local processes.

``LocalSentinel().start()`` starts a master, ``replicas`` replicas of it and three
``redis-server --sentinel`` processes monitoring it as ``SERVICE``, and waits until
every sentinel knows the replicas and the other sentinels, so that killing the master
leads to a failover within a couple of seconds (``down-after-milliseconds`` 1000).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.redis_server import REDIS_SERVER, RedisServer
from tests.harness.wait import wait_until

SERVICE = "phx"
DOWN_AFTER_MS = 1000


class LocalSentinel:
    def __init__(self, replicas: int = 1, sentinels: int = 3) -> None:
        fast_sync = ["--repl-diskless-sync-delay", "0"]  # any node may become the master
        self.master = RedisServer(extra=fast_sync)
        self.replicas = [
            RedisServer(extra=[*fast_sync, "--replicaof", "127.0.0.1", str(self.master.port)])
            for _ in range(replicas)
        ]
        self.ports = [free_port() for _ in range(sentinels)]
        self.dir = Path(tempfile.mkdtemp(prefix="phx-sentinel-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.ports)}/{SERVICE}"

    @property
    def nodes(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self) -> LocalSentinel:
        try:
            for node in self.nodes:
                node.start()
            wait_until(self._replicas_online, 15, what="replicas in sync")
            for port in self.ports:
                self.procs.append(self._start_sentinel(port))
            wait_until(self._sentinels_ready, 20, 0.05, what="sentinels know each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        conf = self.dir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile sentinel-{port}.log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        return subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sentinel_cli(self, port: int, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                             timeout=10)
        return out.stdout.decode().strip()

    def _replicas_online(self) -> bool:
        return all("master_link_status:up" in r.cli("info", "replication")
                   for r in self.replicas)

    def _sentinels_ready(self) -> bool:
        for port in self.ports:
            master = self.sentinel_cli(port, "sentinel", "master", SERVICE).split("\n")
            fields = dict(zip(master[0::2], master[1::2], strict=False))
            if (fields.get("num-slaves") != str(len(self.replicas))
                    or fields.get("num-other-sentinels") != str(len(self.ports) - 1)):
                return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel names it."""
        for port in self.ports:
            addr = self.sentinel_cli(port, "sentinel", "get-master-addr-by-name", SERVICE)
            if addr:
                return int(addr.split()[-1])
        return None

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def wait_failover(self, old_port: int, timeout: float = 30) -> RedisServer:
        """Wait until every sentinel names a new master that accepts writes; return it."""
        def promoted() -> int | None:
            ports = {self.master_port() for _ in self.ports}
            new = next(iter(ports)) if len(ports) == 1 else None
            if new is None or new == old_port:
                return None
            role = self.node(new).cli("role").split("\n")[0]
            return new if role == "master" else None

        return self.node(wait_until(promoted, timeout, 0.05, what="a new master"))

    def wait_replica_of(self, node: RedisServer, master: RedisServer, timeout: float = 30) -> None:
        """Wait until ``node`` replicates ``master`` with its link up."""
        def synced() -> bool:
            try:
                info = node.cli("info", "replication")
            except subprocess.CalledProcessError:
                return False
            return (f"master_port:{master.port}" in info
                    and "master_link_status:up" in info)

        try:
            wait_until(synced, timeout, 0.05, what=f"{node.port} to replicate {master.port}")
        except TimeoutError:
            for log in self.dir.glob("*.log"):  # shown by pytest when the test fails
                print(f"== {log.name}", *log.read_text().splitlines()[-15:], sep="\n")
            raise

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
