"""Fixtures of the integration tests: the brokers in-process worker tests run on, and the
default broker (SQLite) and transport options of the worker subprocesses, whose `worker_env`
and `start_worker` fixtures live in tests/conftest.py (the contract suite uses them too)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from taskq import sync


@pytest.fixture(autouse=True)
def sync_loop_shut_down() -> Iterator[None]:
    """After each test, the background loop of `taskq.sync` closes the connections the test's
    blocking calls made, while the servers they talk to are still up."""
    yield
    sync.shutdown()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


def _rabbitmq(request: pytest.FixtureRequest, tmp: Path) -> dict[str, Any]:
    url = request.getfixturevalue("rabbitmq_server").url
    return {"broker": url, "backend": f"sqlite:///{tmp}/results.db"}


def _redis(request: pytest.FixtureRequest, tmp: Path) -> dict[str, Any]:
    url = request.getfixturevalue("redis_server").url
    return {"broker": f"{url}?prefix=t{uuid.uuid4().hex[:12]}:"}


# The brokers in-process worker tests run on: settings for TaskQ(...), the store
# following the broker unless given.
APP_SETTINGS: dict[str, Callable[[pytest.FixtureRequest, Path], dict[str, Any]]] = {
    "memory": lambda request, tmp: {"broker": f"memory://{tmp.name}"},
    "sqlite": lambda request, tmp: {"broker": f"sqlite:///{tmp}/taskq.db"},
    "amqp": _rabbitmq,
    "redis": _redis,
}


@pytest.fixture(params=sorted(APP_SETTINGS))
def app_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """TaskQ settings for one broker, with a queue of the test's own (a server is shared)."""
    settings = APP_SETTINGS[request.param](request, tmp_path)
    return {
        **settings,
        "task_default_queue": f"q-{uuid.uuid4().hex[:12]}",
        "broker_transport_options": {"polling_interval": 0.02},
    }


@pytest.fixture
def broker_url(sqlite_url: str) -> str:
    """The broker the worker subprocesses use; a test module overrides it for another broker."""
    return sqlite_url


@pytest.fixture
def transport_options() -> dict[str, object]:
    """Short leases for crash tests and quick polling; override to add broker-specific ones."""
    return {"visibility_timeout": 2, "polling_interval": 0.05}


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the writes to Redis connections: one per command or pipeline sent."""
    counter = [0]
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        counter[0] += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield counter
