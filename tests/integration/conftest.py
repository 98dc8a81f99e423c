"""Fixtures that run the real `taskq worker` command as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

HERE = Path(__file__).resolve().parent


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.02) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Await `predicate` until it holds; fail the test after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110 - the state lives in another process
            await anyio.sleep(0.02)


class WorkerProcess:
    """One `taskq worker -A itest_tasks:app` process with its log in a file."""

    def __init__(self, env: dict[str, str], log: Path, args: list[str]) -> None:
        self.log = log
        command = [
            sys.executable,
            "-m",
            "taskq",
            "worker",
            "-A",
            "itest_tasks:app",
            "--loglevel",
            "info",
            *args,
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for(lambda: "ready" in self.output() or self.process.poll() is not None)
        assert self.process.poll() is None, f"worker did not start:\n{self.output()}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.fixture
def worker_env(sqlite_url: str) -> dict[str, str]:
    """The environment of a worker subprocess: the broker URL and short leases for crash tests."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
    env["TASKQ_BROKER_URL"] = sqlite_url
    env["TASKQ_BROKER_TRANSPORT_OPTIONS"] = '{"visibility_timeout": 2, "polling_interval": 0.05}'
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
