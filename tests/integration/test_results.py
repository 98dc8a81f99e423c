"""What a result tells about its task, with an in-process worker on each broker: the call's
name, arguments, queue, worker, retries, when it finished, the tasks it published."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from taskq import TaskQ
from taskq.task import Task
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = TaskQ("results", **app_settings)
    async with app:
        yield app


async def test_a_result_knows_its_call_and_where_it_ran(app: TaskQ) -> None:
    @app.task(bind=True, name="results.scale")
    async def scale(self: Task[Any, Any], value: int, factor: int = 1) -> int:
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return value * factor

    async with running_worker(app, hostname="w1@test"):
        before = time.time()
        result = await scale.apply_async((21,), {"factor": 2})
        assert await result.wait(timeout=20) == 42
    assert await result.info() == 42
    assert await result.name() == "results.scale"
    assert await result.args() == [21]
    assert await result.kwargs() == {"factor": 2}
    assert await result.queue() == app.conf.task_default_queue
    assert await result.worker() == "w1@test"
    assert await result.retries() == 1
    done = await result.date_done()
    assert done is not None and done.tzinfo is UTC
    assert before - 1 <= done.timestamp() <= datetime.now(UTC).timestamp()
    assert await result.children() == []


async def test_children_are_the_tasks_it_published(app: TaskQ) -> None:
    @app.task
    async def double(value: int) -> int:
        return value * 2

    @app.task
    async def fan_out(count: int) -> int:
        for i in range(count):
            await double.delay(i)
        return count

    async with running_worker(app):
        result = await fan_out.delay(3)
        assert await result.get(timeout=20) == 3
        children = await result.children()
        assert [await child.get(timeout=20) for child in children] == [0, 2, 4]
    assert [await child.name() for child in children] == [double.name] * 3


async def test_an_unknown_result_knows_nothing(app: TaskQ) -> None:
    result = app.AsyncResult("never-published")
    assert await result.name() is None
    assert await result.args() is None
    assert await result.date_done() is None
    assert await result.children() == []
