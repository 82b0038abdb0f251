"""A loopback TCP fault proxy the tests own: services reach Redis through it.

It runs its own asyncio loop in a daemon thread, so sync and async tests drive it the
same way. Modes (switch at any time, from any thread):

* ``pass_()`` — forward bytes both ways (the default).
* ``latency(ms)`` — hold every chunk ``ms`` milliseconds before forwarding it, in
  order, in each direction: a round trip gains ``2 * ms`` (a slow network; nothing is
  lost or reordered).
* ``reset()`` — abort every open connection with a TCP RST (SO_LINGER 0), now; new
  connections keep working. ``refuse(True)`` also resets every new connection at once.
* ``blackhole(seconds)`` — for that long nothing gets through: bytes sent either way
  are silently dropped and new connections are accepted but never reach Redis (a
  partition or a dead switch). When it ends, every connection that was open during
  it is reset — its stream lost bytes, so it cannot be trusted — and new ones work.

``connections`` counts accepted connections; ``resets`` the ones the proxy aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from typing import Any

from tests.harness.ports import free_port

CHUNK = 65536


class _Conn:
    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tainted = False  # lost bytes in a blackhole: reset when it ends
        self.tasks: list[asyncio.Task[None]] = []


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with a RST rather than a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``FaultProxy(upstream_port).start()``; point clients at ``url``."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.delay_s = 0.0
        self.refusing = False
        self.blackhole_until = 0.0
        self.connections = 0
        self.resets = 0
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"fault-proxy-{self.port}")
        self._server: asyncio.base_events.Server | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._drop(conn, rst=False)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- modes ----------------------------------------------------------------------

    def pass_(self) -> None:
        """Back to plain forwarding (ends latency, refusal and any blackhole)."""
        self.delay_s = 0.0
        self.refusing = False
        if self.blackhole_until:
            self.blackhole_until = 0.0
            self._call(self._end_blackhole())

    def latency(self, ms: float) -> None:
        self.delay_s = ms / 1000

    def reset(self) -> int:
        """RST every open connection now; returns how many."""
        return self._call(self._reset_all())

    def refuse(self, on: bool = True) -> None:
        self.refusing = on

    def blackhole(self, seconds: float) -> None:
        """Drop everything for ``seconds`` (returns at once; see ``in_blackhole``)."""
        self.blackhole_until = time.monotonic() + seconds
        self._loop.call_soon_threadsafe(self._schedule_end, seconds)

    @property
    def in_blackhole(self) -> bool:
        return self.blackhole_until > time.monotonic()

    def _schedule_end(self, seconds: float) -> None:
        self._loop.call_later(seconds, lambda: asyncio.ensure_future(self._end_blackhole()))

    async def _end_blackhole(self) -> None:
        if self.in_blackhole:
            return  # extended by a later call
        self.blackhole_until = 0.0
        for conn in list(self._conns):
            if conn.tainted:
                self._drop(conn, rst=True)

    async def _reset_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            self._drop(conn, rst=True)
        return len(conns)

    # -- forwarding -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # stop() cancels: end quietly
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn(writer)
        if self.refusing:
            self.resets += 1
            _abort(writer)
            return
        self._conns.add(conn)
        if self.in_blackhole:
            conn.tainted = True  # accepted, never connected upstream, reset at the end
            with contextlib.suppress(Exception):
                while await reader.read(CHUNK):
                    pass
            self._drop(conn, rst=False)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self._drop(conn, rst=True)
            return
        conn.upstream = up_writer
        conn.tasks = [
            asyncio.create_task(self._pump(conn, reader, up_writer)),
            asyncio.create_task(self._pump(conn, up_reader, writer)),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._drop(conn, rst=False)

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader,
                    dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(conn, queue, dst))
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                if self.in_blackhole:
                    conn.tainted = True
                    continue
                await queue.put((time.monotonic() + self.delay_s, data))
            await queue.put((0.0, b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            self._drop(conn, rst=False)

    async def _send(self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes]],
                    dst: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError):
                    if dst.can_write_eof():
                        dst.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.in_blackhole:
                conn.tainted = True
                continue
            dst.write(data)
            await dst.drain()

    def _drop(self, conn: _Conn, *, rst: bool) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        if rst:
            self.resets += 1
            _abort(conn.client)
            _abort(conn.upstream)
        else:
            conn.client.transport.abort() if conn.tainted else conn.client.close()
            if conn.upstream is not None:
                conn.upstream.close()
        for task in conn.tasks:
            if task is not asyncio.current_task():
                task.cancel()
