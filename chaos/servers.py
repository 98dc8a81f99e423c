"""The test suite's throwaway servers (tests/servers.py, loaded by path: `tests` is no
package), and the RabbitMQ node that the scenarios which never restart it share.

Every server is a child process on loopback with its files under the run's directory,
stopped by pid. Never a system service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, cast

import anyio

from benchmarks.servers import load_test_servers

ROOT = Path(__file__).resolve().parent.parent


class Server(Protocol):
    """What the scenarios use of tests/servers.py's RedisServer and RabbitMQServer."""

    @property
    def url(self) -> str: ...

    @property
    def port(self) -> int:
        """The port clients connect to (AMQP's for RabbitMQ)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None:
        """Graceful: SIGTERM by pid."""
        ...

    def kill(self) -> None:
        """A crash: SIGKILL by pid."""
        ...


def not_installed_error() -> type[Exception]:
    """What a server raises when its binary is missing (its message names the package)."""
    error: type[Exception] = load_test_servers().ServerNotInstalled
    return error


async def start_redis(directory: Path, *, aof: bool = False) -> Server:
    """A started RedisServer (tests/servers.py) keeping its files under `directory`."""
    server = cast(Server, load_test_servers().RedisServer(directory, aof=aof))
    await anyio.to_thread.run_sync(server.start)
    return server


async def start_rabbitmq(directory: Path) -> Server:
    """A started RabbitMQServer (5-15 s) keeping its files under `directory`."""
    server = cast(Server, load_test_servers().RabbitMQServer(directory))
    await anyio.to_thread.run_sync(server.start)
    return server


def redis_answers(server: Server) -> bool:
    """Whether the Redis answers PING with PONG now (blocking, up to 2 s)."""
    return bool(load_test_servers().redis_answers_ping(server.port))


def rabbitmq_answers(server: Server) -> bool:
    """Whether the RabbitMQ node answers the AMQP handshake now (blocking, up to 3 s)."""
    return bool(load_test_servers().amqp_answers(server.port))


class SharedRabbitMQ:
    """One RabbitMQ node for the whole run, started when a scenario first asks for it:
    scenarios that do not restart it use queues of their own on it."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._server: Server | None = None
        self._lock = anyio.Lock()

    async def get(self) -> Server:
        async with self._lock:
            if self._server is None:
                self._server = await start_rabbitmq(self._directory)
            return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
