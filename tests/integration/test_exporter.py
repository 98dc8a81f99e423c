"""`taskq exporter`: a real worker (with -E) and a real exporter process on Redis and
RabbitMQ; the exporter's /metrics counts what the worker ran."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import (
    TaskqProcess,
    WorkerProcess,
    eventually,
    free_port,
    queue_depths,
    scrape,
    task_counts,
    value,
)

from taskq import TaskError, TaskQ

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
HEARTBEAT = 0.2


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_server").url
        return f"{url}?prefix=t{uuid.uuid4().hex[:12]}:"
    amqp: str = request.getfixturevalue("rabbitmq_server").url
    return amqp


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"  # a queue of the test's own: the servers are shared


@pytest.fixture
def worker_env(worker_env: dict[str, str], tmp_path: Path, queue: str) -> dict[str, str]:
    return {
        **worker_env,
        "TASKQ_RESULT_BACKEND": f"sqlite:///{tmp_path}/results.db",
        "TASKQ_WORKER_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "TASKQ_TASK_DEFAULT_QUEUE": queue,
    }


@pytest.fixture
async def producer(broker_url: str, worker_env: dict[str, str], queue: str) -> AsyncIterator[TaskQ]:
    app = TaskQ(
        "producer",
        broker=broker_url,
        backend=worker_env["TASKQ_RESULT_BACKEND"],
        task_default_queue=queue,
    )
    async with app:
        yield app


async def test_the_exporter_counts_what_the_workers_ran(
    producer: TaskQ,
    start_worker: StartWorker,
    worker_env: dict[str, str],
    tmp_path: Path,
    queue: str,
) -> None:
    port = free_port()
    exporter = TaskqProcess(
        worker_env, tmp_path / "exporter.log", ["exporter", "--port", str(port)], "Exporter ready"
    )
    try:
        await producer.send_task("itest.add", [0, 0], countdown=300)  # the one delayed message
        worker = start_worker("-E", "-c", "4", "--hostname", "w1@test")

        async def one_online() -> bool:
            return value(await scrape(port), "taskq_workers_online") == 1

        await eventually(one_online)
        sleepers = [await producer.send_task("itest.concurrent", [1.0]) for _ in range(2)]

        async def two_active() -> bool:  # during the drain: from the heartbeats
            return value(await scrape(port), "taskq_worker_active_tasks", worker="w1@test") == 2

        await eventually(two_active)
        added = [await producer.send_task("itest.add", [i, i]) for i in range(20)]
        failed = [await producer.send_task("itest.fail", ["boom"]) for _ in range(3)]
        retried = [await producer.send_task("itest.retry_once") for _ in range(2)]
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired = await producer.send_task("itest.add", [1, 1], expires=past)
        unknown = await producer.send_task("itest.nowhere")
        assert [await r.get(timeout=15) for r in added] == [2 * i for i in range(20)]
        assert [await r.get(timeout=15) for r in retried] == [1, 1]
        for result in [*failed, expired, unknown]:
            with pytest.raises(TaskError):
                await result.get(timeout=15)
        for result in sleepers:
            assert await result.get(timeout=15) >= 1

        expected = {
            ("itest.add", "succeeded"): 20,
            ("itest.concurrent", "succeeded"): 2,
            ("itest.fail", "failed"): 3,
            ("itest.retry_once", "retried"): 2,
            ("itest.retry_once", "succeeded"): 2,
            ("itest.add", "revoked"): 1,
            ("unknown", "rejected"): 1,
        }

        async def counted() -> bool:
            samples = await scrape(port)
            counts, depths = task_counts(samples, queue), queue_depths(samples, queue)
            return counts == expected and depths == [1, 1, 1]

        await eventually(counted)
        samples = await scrape(port)
        runtime, wait = "taskq_task_runtime_seconds", "taskq_task_queue_wait_seconds"
        labels = {"task": "itest.concurrent", "queue": queue}
        assert value(samples, f"{runtime}_count", **labels) == 2
        assert 1.9 <= value(samples, f"{runtime}_sum", **labels) < 4.0
        assert value(samples, f"{runtime}_count", task="itest.fail", queue=queue) == 3
        assert value(samples, f"{wait}_count", task="itest.add", queue=queue) == 20  # started
        assert value(samples, "taskq_worker_active_tasks", worker="w1@test") == 0

        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0

        async def gone() -> bool:
            samples = await scrape(port)
            active = [name for name, _ in samples if name == "taskq_worker_active_tasks"]
            return value(samples, "taskq_workers_online") == 0 and not active

        await eventually(gone)
    finally:
        exporter.stop()


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)  # it never connects
def test_the_exporter_needs_prometheus_client(worker_env: dict[str, str], tmp_path: Path) -> None:
    """Without the extra, a one-line error (a stand-in module fails to import as an absent
    one does)."""
    (tmp_path / "prometheus_client").mkdir()
    (tmp_path / "prometheus_client" / "__init__.py").write_text("raise ImportError('absent')\n")
    env = {**worker_env, "PYTHONPATH": f"{tmp_path}:{worker_env['PYTHONPATH']}"}
    argv = ["-m", "taskq", "exporter", "-A", "itest_tasks:app", "--port", str(free_port())]
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == "Error: metrics need prometheus-client: pip install 'taskq[prometheus]'\n"
