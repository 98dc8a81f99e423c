"""Multi-process workers on Redis: the supervisor of `--processes`, the process pool, recycling,
autoscaling and the daemon options, with real `taskq worker` processes."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from servers import RedisServer
from support import WorkerProcess, wait_for

from taskq import TaskQ

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
APP = "process_tasks:app"


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def transport_options() -> dict[str, object]:
    return {"visibility_timeout": 2}


@pytest.fixture
async def producer(broker_url: str) -> AsyncIterator[TaskQ]:
    app = TaskQ("producer", broker=broker_url)
    async with app:
        yield app


def start_processes(start_worker: StartWorker, count: int, *args: str) -> WorkerProcess:
    """A supervisor of `count` worker processes, once every one of them is ready."""
    worker = start_worker("--processes", str(count), "-n", "w", *args, app=APP)
    wait_for(lambda: worker.output().count(" ready: ") >= count, timeout=30)
    return worker


async def test_a_killed_worker_process_is_replaced_and_loses_nothing(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    supervisor = start_processes(start_worker, 2, "-c", "10")
    assert "Worker w-1 ready" in supervisor.output() and "Worker w-2 ready" in supervisor.output()
    results = [await producer.send_task("ptest.pid", args=[0.02]) for _ in range(300)]
    victim = await results[0].get(timeout=20)
    os.kill(victim, signal.SIGKILL)
    pids = [await result.get(timeout=60) for result in results]
    assert len(pids) == 300
    assert f"(pid {victim}) was killed by SIGKILL; starting a replacement" in supervisor.output()
    wait_for(lambda: supervisor.output().count(" ready: ") == 3)  # the replacement too
    survivor = next(pid for pid in pids if pid != victim)
    after = [await producer.send_task("ptest.pid") for _ in range(40)]
    assert {await result.get(timeout=20) for result in after} - {victim, survivor}


async def test_warm_shutdown_finishes_the_running_tasks_of_every_process(
    producer: TaskQ, start_worker: StartWorker, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    supervisor = start_processes(start_worker, 2, "-c", "2", "--prefetch-multiplier", "1")
    results = [
        await producer.send_task("ptest.started", args=[str(markers), 2.0]) for _ in range(4)
    ]
    wait_for(lambda: len(list(markers.iterdir())) == 4)
    started_in = {path.name.partition("-")[0] for path in markers.iterdir()}
    assert len(started_in) == 2  # two tasks running in each process
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    pids = [await result.get(timeout=5) for result in results]
    assert {str(pid) for pid in pids} == started_in
    assert "Supervisor stopped: every worker process has exited" in supervisor.output()
