"""A private Redis Cluster from real ``redis-server`` processes on loopback ports.

``LocalCluster(masters=3, replicas=0).start()`` starts the nodes with
``--cluster-enabled yes``, joins them with ``redis-cli --cluster create`` and waits until
every node reports ``cluster_state:ok`` and agrees on the slot map. ``migrate_slot``
moves one slot to another master the way ``redis-cli --cluster reshard`` does
(IMPORTING / MIGRATING, ``MIGRATE`` in small batches, ``SETSLOT NODE``), so a test can
move exactly the slot of a busy queue while clients keep using it.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

from tests.harness.ports import free_port
from tests.harness.redis_server import RedisServer
from tests.harness.wait import wait_until

NODE_TIMEOUT_MS = 2000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 < 65536 and _bindable(port + 10000):
            return port


class LocalCluster:
    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.masters = masters
        self.replicas = replicas
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        count = masters * (1 + replicas)
        self.nodes = [RedisServer(port=cluster_port(), extra=list(extra)) for _ in range(count)]

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters])
        return f"redis+cluster://{seeds}"

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas",
                 str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            wait_until(self.healthy, 30, 0.05, what="cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        maps = set()
        for node in self.nodes:
            if "cluster_state:ok" not in node.cli("cluster", "info"):
                return False
            maps.add(self._slot_map(node))
        return len(maps) == 1 and bool(next(iter(maps)))

    def _slot_map(self, node: RedisServer) -> str:
        lines = node.cli("cluster", "nodes").splitlines()
        owners = sorted(" ".join([p[1].split("@")[0], *p[8:]]) for p in map(str.split, lines)
                        if "master" in p[2] and len(p) > 8)
        return "|".join(owners)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- topology -------------------------------------------------------------------

    def keyslot(self, key: str) -> int:
        return int(self.nodes[0].cli("cluster", "keyslot", key))

    def node_id(self, node: RedisServer) -> str:
        return node.cli("cluster", "myid")

    def owner(self, slot: int) -> RedisServer:
        """The master serving ``slot`` (as the first node sees it)."""
        for line in self.nodes[0].cli("cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2]:
                continue
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"slot {slot} has no owner")

    def primaries(self) -> list[RedisServer]:
        ports = set()
        for line in self.nodes[0].cli("cluster", "nodes").splitlines():
            parts = line.split()
            if "master" in parts[2] and len(parts) > 8:
                ports.add(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return [n for n in self.nodes if n.port in ports]

    def tags_on_distinct_masters(self, prefix: str, count: int) -> list[str]:
        """``count`` names ``prefix-N`` whose hash tags ``{name}`` sit on different masters."""
        names: list[str] = []
        used: set[int] = set()
        for i in range(10_000):
            name = f"{prefix}-{i}"
            port = self.owner(self.keyslot(name)).port
            if port not in used:
                used.add(port)
                names.append(name)
                if len(names) == count:
                    return names
        raise LookupError("not enough masters for distinct tags")

    # -- resharding -----------------------------------------------------------------

    def migrate_slot(self, slot: int, target: RedisServer, batch: int = 5,
                     between: Callable[[], None] | None = None) -> int:
        """Move ``slot`` to ``target``; ``between()`` runs after each batch of keys moved.

        Returns how many keys moved.
        """
        source = self.owner(slot)
        src_id, dst_id = self.node_id(source), self.node_id(target)
        target.cli("cluster", "setslot", str(slot), "importing", src_id)
        source.cli("cluster", "setslot", str(slot), "migrating", dst_id)
        moved = 0
        while True:
            names = source.cli("cluster", "getkeysinslot", str(slot), str(batch)).split()
            if not names:
                break
            source.cli("migrate", "127.0.0.1", str(target.port), "", "0", "5000",
                       "replace", "keys", *names)
            moved += len(names)
            if between is not None:
                between()
        for node in (target, source, *[n for n in self.primaries() if n not in (source, target)]):
            node.cli("cluster", "setslot", str(slot), "node", dst_id)
        wait_until(self.healthy, 30, 0.05, what="slot map agreed after migration")
        return moved
