"""Operating a real `taskq worker` on Redis: /metrics scraped during a drain."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from servers import RedisServer
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
from taskq.exporter import WORKERS_ONLINE

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def producer(broker_url: str) -> AsyncIterator[TaskQ]:
    async with TaskQ("producer", broker=broker_url) as app:
        yield app


async def test_metrics_count_the_tasks_a_drain_ran(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    port = free_port()
    await producer.send_task("itest.add", [0, 0], countdown=300)  # the one delayed message
    worker = start_worker("-c", "4", "--metrics-port", str(port))
    assert value(await scrape(port), "taskq_worker_concurrency") == 4

    sleepers = [await producer.send_task("itest.concurrent", [1.0]) for _ in range(4)]

    async def four_active() -> bool:
        return value(await scrape(port), "taskq_worker_active_tasks") == 4

    await eventually(four_active)
    added = [await producer.send_task("itest.add", [i, i]) for i in range(20)]
    failed = [await producer.send_task("itest.fail", ["boom"]) for _ in range(3)]
    retried = [await producer.send_task("itest.retry_once") for _ in range(2)]
    replaced = await producer.send_task("itest.add_replaced", [1, 2])  # by add(1, 2) | add(0)
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = await producer.send_task("itest.add", [1, 1], expires=past)
    unknown = await producer.send_task("itest.nowhere")
    assert [await r.get(timeout=15) for r in added] == [2 * i for i in range(20)]
    assert [await r.get(timeout=15) for r in retried] == [1, 1]
    assert await replaced.get(timeout=15) == 3
    for result in [*failed, expired, unknown]:
        with pytest.raises(TaskError):
            await result.get(timeout=15)
    for result in sleepers:
        await result.get(timeout=15)

    expected = {
        ("itest.add", "succeeded"): 22,
        ("itest.add_replaced", "replaced"): 1,
        ("itest.concurrent", "succeeded"): 4,
        ("itest.fail", "failed"): 3,
        ("itest.retry_once", "retried"): 2,
        ("itest.retry_once", "succeeded"): 2,
        ("itest.add", "revoked"): 1,
        ("unknown", "rejected"): 1,
    }

    async def counted() -> bool:
        samples = await scrape(port)
        counts, depths = task_counts(samples, "default"), queue_depths(samples, "default")
        return counts == expected and depths == [1, 1, 1]

    await eventually(counted)
    output = worker.output()  # a text log line of a failure has its traceback after it
    failure = f"Task itest.fail[{failed[0].id}] raised ValueError: boom"
    assert "\nTraceback (most recent call last):\n" in output.partition(failure)[2]
    samples = await scrape(port)
    runtime = "taskq_task_runtime_seconds"
    labels = {"task": "itest.concurrent", "queue": "default"}
    assert value(samples, f"{runtime}_count", **labels) == 4
    assert 3.9 <= value(samples, f"{runtime}_sum", **labels) < 8.0  # timers round to ms
    wait = "taskq_task_queue_wait_seconds_count"
    assert value(samples, wait, task="itest.add", queue="default") == 23  # revoked included
    assert value(samples, "taskq_worker_active_tasks") == 0
    scraped = {name for name, _ in samples} | {name.rpartition("_")[0] for name, _ in samples}
    scraped.add(WORKERS_ONLINE.name)  # the exporter's own (tests/integration/test_exporter.py)
    for documented in (DOCS / "operations.md", DOCS / "grafana-dashboard.json"):
        named = set(re.findall(r"taskq_[a-z_]+[a-z]", documented.read_text()))
        assert named and named <= scraped, f"{documented.name}: {named - scraped}"


def test_metrics_port_needs_prometheus_client(worker_env: dict[str, str], tmp_path: Path) -> None:
    """Without the extra, --metrics-port is a one-line error (a stand-in module fails to import
    as an absent one does)."""
    (tmp_path / "prometheus_client").mkdir()
    (tmp_path / "prometheus_client" / "__init__.py").write_text("raise ImportError('absent')\n")
    env = {**worker_env, "PYTHONPATH": f"{tmp_path}:{worker_env['PYTHONPATH']}"}
    argv = ["-m", "taskq", "worker", "-A", "itest_tasks:app", "--metrics-port", str(free_port())]
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == "Error: metrics need prometheus-client: pip install 'taskq[prometheus]'\n"


def test_a_metrics_port_in_use_is_one_line(worker_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["-m", "taskq", "worker", "-A", "itest_tasks:app", "--metrics-port", str(port)]
        done = subprocess.run(
            [sys.executable, *argv], env=worker_env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"Error: cannot serve HTTP on port {port}: Address already in use\n"
    )


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", timeout=5)


async def test_healthz_fails_while_a_task_blocks_the_loop_and_the_task_is_named(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port))
    assert (await get(port, "/healthz")).status_code == 200
    assert (await get(port, "/readyz")).status_code == 200
    result = await producer.send_task("itest.block_loop", [2.5])
    statuses: list[int] = []

    async def failed_then_recovered() -> bool:
        response = await get(port, "/healthz")
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.text.startswith("event loop blocked for ")
        return 503 in statuses and statuses[-1] == 200

    await eventually(failed_then_recovered)
    await result.get(timeout=10)
    warning = f"Task itest.block_loop[{result.id}] blocked the event loop for "
    lines = [line for line in worker.output().splitlines() if warning in line]
    assert len(lines) == 1, worker.output()
    seconds = float(lines[0].split(warning)[1].split(" s:")[0])
    assert 2.0 <= seconds <= 3.5
    assert lines[0].endswith(" s: a blocking call in an async task?")


async def test_readyz_fails_once_the_worker_stops_consuming(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port))
    running = await producer.send_task("itest.concurrent", [1.5])

    async def active() -> bool:
        return value(await scrape(port), "taskq_worker_active_tasks") == 1

    await eventually(active)
    worker.signal(signal.SIGTERM)  # warm: it finishes the task, serving meanwhile

    async def unready() -> bool:
        return (await get(port, "/readyz")).status_code == 503

    await eventually(unready)
    assert (await get(port, "/readyz")).text == "not consuming\n"
    assert (await get(port, "/healthz")).status_code == 200
    assert await running.get(timeout=10) == 1
    assert worker.wait() == 0


async def test_readyz_fails_while_the_broker_is_down_healthz_does_not(
    worker_env: dict[str, str], start_server: Callable[[RedisServer], RedisServer], tmp_path: Path
) -> None:
    """From before the broker is up (the worker waits for it) to an outage and back."""
    redis = start_server(RedisServer(tmp_path / "redis"))
    redis.stop()
    port = free_port()
    env = {**worker_env, "TASKQ_BROKER_URL": redis.url}
    args = ["worker", "--metrics-port", str(port)]
    worker = TaskqProcess(env, tmp_path / "worker.log", args, ready_text="(retry 1/")

    def readyz_is(status: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await get(port, "/readyz")).status_code == status

        return check

    try:
        assert (await get(port, "/healthz")).status_code == 200
        assert (await get(port, "/readyz")).text == "not consuming\n"
        redis.start()
        await eventually(readyz_is(200), timeout=30)
        redis.kill()
        await eventually(readyz_is(503), timeout=20)
        assert (await get(port, "/readyz")).text == "the broker did not answer\n"
        assert (await get(port, "/healthz")).status_code == 200  # alive: not to be restarted
        redis.start()
        await eventually(readyz_is(200), timeout=20)
    finally:
        worker.stop()
