"""Helpers for tests that drive other processes: polling with a deadline, worker subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskq import TaskQ, chain, chord, signature

INTEGRATION = Path(__file__).resolve().parent / "integration"


def in_ci() -> bool:
    """CI=true (or 1): a missing server or browser fails a test instead of skipping it."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


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


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def scrape(port: int) -> Samples:
    """The samples a /metrics on `port` serves, by name and labels."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def task_counts(samples: Samples, queue: str) -> dict[tuple[str, str], float]:
    """`taskq_tasks_total`'s counts of `queue` that are not zero, by (task, state)."""
    counts = {}
    for (name, labels), count in samples.items():
        label = dict(labels)
        if name == "taskq_tasks_total" and label["queue"] == queue and count:
            counts[label["task"], label["state"]] = count
    return counts


def queue_depths(samples: Samples, queue: str) -> list[float]:
    """The queue's length, delayed messages and dead letters."""
    names = ("taskq_queue_length", "taskq_queue_delayed", "taskq_dead_letters")
    return [value(samples, name, queue=queue) for name in names]


def worker_environment(broker_url: str, transport_options: dict[str, object]) -> dict[str, str]:
    """The environment of a worker subprocess: this one without TASKQ_ settings, the broker
    URL and transport options, and tests/integration (itest_tasks) on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
    env["TASKQ_BROKER_URL"] = broker_url
    env["TASKQ_BROKER_TRANSPORT_OPTIONS"] = json.dumps(transport_options)
    env["PYTHONPATH"] = os.pathsep.join([str(INTEGRATION), env.get("PYTHONPATH", "")])
    return env


class TaskqProcess:
    """One `taskq <command> -A itest_tasks:app` process (or another app, run in another
    directory: an example's) with its log in a file; started when its log shows `ready_text`."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        args: list[str],
        ready_text: str,
        app: str = "itest_tasks:app",
        cwd: Path = INTEGRATION,
    ) -> None:
        self.log = log
        command, *rest = args
        argv = [sys.executable, "-m", "taskq", command, "-A", app, "--loglevel", "info"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*argv, *rest], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for(lambda: ready_text in self.output() or self.process.poll() is not None)
        assert self.process.poll() is None, f"taskq {command} did not start:\n{self.output()}"

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


class WorkerProcess(TaskqProcess):
    """One `taskq worker` process."""

    def __init__(self, env: dict[str, str], log: Path, args: list[str], **where: Any) -> None:
        super().__init__(env, log, ["worker", *args], ready_text="ready", **where)


def runs(worker: TaskqProcess, task_id: str) -> int:
    """How many times `worker` finished the task (successfully or not), from its log."""
    return len(re.findall(rf"\[{task_id}\] (succeeded|raised)", worker.output()))


async def kill_a_worker_during_a_chord(
    producer: TaskQ, start_worker: Callable[..., WorkerProcess], marker: Path
) -> None:
    """A 1,000-member chord whose worker is SIGKILLed midway: a second worker finishes it,
    and the callback runs once, with the 1,000 results in order."""
    first = start_worker("-c", "50")
    header = [signature("itest.slow_square", [i, 0.02], app=producer) for i in range(1000)]
    callback = signature("itest.count_calls", [str(marker)], app=producer)
    result = await chord(header, callback).apply_async()
    broker = await producer.connected_broker()

    async def partly_done() -> bool:
        return await broker.queue_length("default") < 700

    await eventually(partly_done, timeout=60)
    first.signal(signal.SIGKILL)
    first.wait()
    start_worker("-c", "50")
    assert await result.get(timeout=120) == 1000
    assert (await anyio.Path(marker).read_text()).splitlines() == ["1000 ordered"]


async def kill_a_worker_during_a_chain(
    producer: TaskQ, start_worker: Callable[..., WorkerProcess], links: int = 200
) -> None:
    """A chain of `links` `acks_late` links, most of it stored by reference, whose worker is
    SIGKILLed a third of the way: a second worker runs it to its end, each link once more
    at most, the last result counting every link."""
    first = start_worker("-c", "4")
    steps = [signature("itest.slow_increment", [0.01], app=producer) for _ in range(links - 1)]
    workflow = chain(signature("itest.slow_increment", [0, 0.01], app=producer), *steps)
    result = await workflow.apply_async()
    third = result
    for _ in range(links - links // 3):
        assert third.parent is not None
        third = third.parent

    async def a_third_done() -> bool:
        return await third.ready()

    await eventually(a_third_done, timeout=60)
    assert not await result.ready()
    first.signal(signal.SIGKILL)
    first.wait()
    start_worker("-c", "4")
    assert await result.get(timeout=120) == links


def worker_broker_url(kind: str, request: pytest.FixtureRequest, place: Path, prefix: str) -> str:
    """The URL of a worker subprocess's broker of `kind` (sqlite, redis, redis-cluster, amqp),
    on the session's shared servers; SQLite in `place`, Redis keys under `prefix`."""
    if kind == "sqlite":
        return f"sqlite:///{place}/broker.db"
    if kind == "redis":
        return f"{request.getfixturevalue('redis_server').url}?prefix={prefix}"
    if kind == "redis-cluster":
        return f"{request.getfixturevalue('redis_cluster').url}?cluster=true&prefix={prefix}"
    url: str = request.getfixturevalue("rabbitmq_server").url
    return url
