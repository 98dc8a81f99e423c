"""A Redis crash and restart (with an append-only file) under a running `taskq worker`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from servers import RedisServer
from support import WorkerProcess, eventually

from taskq import TaskQ

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
TASKS = 100  # of each kind


@pytest.fixture
def redis(start_server: Callable[[RedisServer], RedisServer], tmp_path: Path) -> RedisServer:
    return start_server(RedisServer(tmp_path / "redis", aof=True))


@pytest.fixture
def broker_url(redis: RedisServer) -> str:
    return redis.url


@pytest.fixture
def transport_options() -> dict[str, object]:
    return {"visibility_timeout": 3}


@pytest.fixture
async def producer(broker_url: str) -> AsyncIterator[TaskQ]:
    app = TaskQ("producer", broker=broker_url)
    async with app:
        yield app


async def test_a_redis_restart_loses_nothing_and_redoes_nothing(
    producer: TaskQ, start_worker: StartWorker, redis: RedisServer, tmp_path: Path
) -> None:
    worker = start_worker("-c", "10")
    early = [  # acked before they run
        await producer.send_task("itest.marked_early", args=[str(tmp_path / f"m{n}"), 0.05])
        for n in range(TASKS)
    ]
    late = [await producer.send_task("itest.slow_square", args=[n, 0.05]) for n in range(TASKS)]
    broker = await producer.connected_broker()

    async def under_way() -> bool:
        return await broker.queue_length("default") < 1.6 * TASKS

    await eventually(under_way)
    redis.kill()  # SIGKILL: only what the append-only file holds survives
    await anyio.sleep(0.5)  # the outage
    redis.start()

    assert [await r.get(timeout=60) for r in late] == [n * n for n in range(TASKS)]
    assert {await r.get(timeout=60) for r in early} == {worker.pid}
    assert await (await producer.send_task("itest.add", args=[2, 3])).get(timeout=20) == 5
    log = worker.output()
    assert "Redis unavailable" in log and worker.process.poll() is None
    for result in early + late:
        assert len(re.findall(rf"\[{result.id}\] succeeded", log)) == 1, result.id

    async def drained() -> bool:
        return await broker.queue_length("default") == 0

    await eventually(drained)


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    producer: TaskQ, start_worker: StartWorker, redis: RedisServer, tmp_path: Path
) -> None:
    """20 running tasks renew their leases throughout a 3 s outage: two log lines, not one
    per failed renewal."""
    worker = start_worker("-c", "20")
    running = [
        await producer.send_task("itest.marked", args=[str(tmp_path / f"m{n}"), 6.0])
        for n in range(20)
    ]

    async def all_started() -> bool:
        return all([await anyio.Path(tmp_path / f"m{n}").exists() for n in range(20)])

    await eventually(all_started)
    redis.kill()
    await anyio.sleep(3.0)  # the outage: several rounds of lease renewals fail
    redis.start()
    assert {await r.get(timeout=60) for r in running} == {worker.pid}
    log = worker.output()
    assert log.count("Redis unavailable") == 1, log
    ended = re.findall(r"Redis reachable again after ([\d.]+) s; retried meanwhile: (.*)", log)
    assert len(ended) == 1, log
    lasted, retried = ended[0]
    assert float(lasted) >= 2.5
    assert "renewing a lease" in retried
