"""Fixtures that run the real `taskq worker` command as a subprocess (see support.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import WorkerProcess

HERE = Path(__file__).resolve().parent


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


APP_URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp: f"memory://{tmp.name}",
    "sqlite": lambda tmp: f"sqlite:///{tmp}/taskq.db",
}


@pytest.fixture(params=sorted(APP_URLS))
def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each broker an in-process worker test runs on (the store follows the broker)."""
    return APP_URLS[request.param](tmp_path)


@pytest.fixture
def broker_url(sqlite_url: str) -> str:
    """The broker the worker subprocesses use; a test module overrides it for another broker."""
    return sqlite_url


@pytest.fixture
def transport_options() -> dict[str, object]:
    """Short leases for crash tests and quick polling; override to add broker-specific ones."""
    return {"visibility_timeout": 2, "polling_interval": 0.05}


@pytest.fixture
def worker_env(broker_url: str, transport_options: dict[str, object]) -> dict[str, str]:
    """The environment of a worker subprocess: broker URL and transport options."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
    env["TASKQ_BROKER_URL"] = broker_url
    env["TASKQ_BROKER_TRANSPORT_OPTIONS"] = json.dumps(transport_options)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; all of them are stopped (by pid) after the test."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(worker_env, tmp_path / f"worker-{len(started)}.log", list(args))
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
