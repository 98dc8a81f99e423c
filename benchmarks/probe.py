"""The completion counter: every benchmark task ends with one Redis INCR (as in DESIGN.md's
measurements), and the timer polls the counter to see when a workload is done.

This is the one way to tell that N tasks ran that works the same for every library, whatever
its result backend. The client is a few lines of RESP over the standard library, so each task
pays the same for it in every library's worker: an asyncio protocol that pipelines INCRs from
concurrent coroutines on one connection (one write per event-loop turn), and a blocking
socket per thread for sync tasks.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

COUNTER_KEY = "bench:done"
URL_VARIABLE = "BENCH_REDIS_URL"
POLL_INTERVAL = 0.005
STALL_TIMEOUT = 60.0


def _command(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)


INCR = _command("INCR", COUNTER_KEY)
READ = _command("INCRBY", COUNTER_KEY, "0")  # an integer reply, like INCR's
RESET = _command("SET", COUNTER_KEY, "0")


def _address() -> tuple[str, int]:
    url = urlsplit(os.environ[URL_VARIABLE])
    return url.hostname or "127.0.0.1", url.port or 6379


def _parse(line: bytes) -> int:
    if line[:1] == b":":
        return int(line[1:])
    if line[:1] == b"+":
        return 0
    raise RuntimeError(f"redis answered {line!r}")


class _Protocol(asyncio.Protocol):
    """Single-line replies, answered in order: each resolves the oldest waiter."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.waiters: deque[asyncio.Future[int]] = deque()
        self.buffer = b""
        self.outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            waiter = self.waiters.popleft()
            try:
                waiter.set_result(_parse(line))
            except RuntimeError as exc:
                waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiters:
            self.waiters.popleft().set_exception(exc or ConnectionError("redis went away"))

    def send(self, command: bytes) -> asyncio.Future[int]:
        """Queue `command`; the commands of one loop turn go out in one write, so the probe
        costs each task a few microseconds rather than a system call of its own."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiters.append(waiter)
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(command)
        return waiter

    def _flush(self) -> None:
        assert self.transport is not None
        data, self.outgoing = b"".join(self.outgoing), []
        self.transport.write(data)


_connections: dict[asyncio.AbstractEventLoop, asyncio.Future[_Protocol]] = {}
_sockets = threading.local()


async def _protocol() -> _Protocol:
    loop = asyncio.get_running_loop()
    connection = _connections.get(loop)
    if connection is None:
        connection = _connections[loop] = loop.create_future()
        try:
            _, protocol = await loop.create_connection(_Protocol, *_address())
        except BaseException as exc:
            del _connections[loop]
            connection.set_exception(exc)
            raise
        connection.set_result(protocol)
    return await connection


async def incr() -> int:
    """Count one finished task (from a coroutine)."""
    return await (await _protocol()).send(INCR)


def incr_sync() -> int:
    """Count one finished task (from a thread)."""
    sock = getattr(_sockets, "sock", None)
    if sock is None:
        sock = _sockets.sock = socket.create_connection(_address())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(INCR)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("redis went away")
        reply += chunk
    return _parse(reply.rstrip())


async def count() -> int:
    return await (await _protocol()).send(READ)


async def reset() -> None:
    await (await _protocol()).send(RESET)


async def wait_for(target: int, timeout: float, alive: Callable[[], bool]) -> None:
    """Return once `target` tasks have been counted; TimeoutError after `timeout` seconds or
    after STALL_TIMEOUT seconds without one more task counted (a supervisor can outlive the
    worker process it runs), RuntimeError as soon as `alive()` says the worker is gone."""
    loop = asyncio.get_running_loop()
    seen, moved_at = -1, loop.time()
    async with asyncio.timeout(timeout):
        while (done := await count()) < target:
            if not alive():
                raise RuntimeError("the worker exited")
            if done != seen:
                seen, moved_at = done, loop.time()
            elif loop.time() - moved_at > STALL_TIMEOUT:
                raise TimeoutError(f"stuck: no task finished in {STALL_TIMEOUT:.0f} s")
            await asyncio.sleep(POLL_INTERVAL)
