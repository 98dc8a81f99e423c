"""Declaring tasks, with an in-process worker on each broker: class-based tasks, argument
checks at publish, retries with an eta or expiry, what a task knows of its delivery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskq import TaskQ, TaskRevokedError, states
from taskq.errors import BadArgumentsError
from taskq.task import Task
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = TaskQ("tasks", **app_settings)
    async with app:
        yield app


async def test_arguments_that_do_not_fit_are_refused_before_publishing(app: TaskQ) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(typing=False)
    async def loose(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match=r"add: missing a required argument: 'y'"):
        await add.delay(5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        await add.apply_async((1, 2), {"z": 3})
    broker = await app.connected_broker()
    assert await broker.queue_length(app.conf.task_default_queue) == 0
    unchecked = await loose.delay(5)  # type: ignore[call-arg]
    assert await broker.queue_length(app.conf.task_default_queue) == 1
    async with running_worker(app):
        with pytest.raises(BadArgumentsError):
            await unchecked.get(timeout=20)
        assert await (await add.delay(2, y=3)).get(timeout=20) == 5


async def test_a_retry_at_an_eta_runs_then_and_one_that_expires_is_revoked(app: TaskQ) -> None:
    runs: list[float] = []

    @app.task(bind=True)
    async def later(self: Task[Any, Any]) -> int:
        runs.append(time.time())
        if self.request.retries == 0:
            raise self.retry(eta=datetime.now(UTC) + timedelta(seconds=0.6))
        return self.request.retries

    @app.task(bind=True)
    async def too_late(self: Task[Any, Any]) -> None:
        raise self.retry(countdown=0.5, expires=0.1, max_retries=5)

    with pytest.raises(ValueError, match="countdown or eta, not both"):
        later.retry(countdown=1, eta=time.time())
    async with running_worker(app):
        assert await (await later.delay()).get(timeout=20) == 1
        expired = await too_late.delay()
        with pytest.raises(TaskRevokedError):
            await expired.get(timeout=20)
    assert runs[1] - runs[0] >= 0.5
    assert await expired.status() == states.REVOKED
    assert await expired.retries() == 1  # the retry was published, and never ran


async def test_a_task_sees_its_delivery_info_and_properties(app: TaskQ) -> None:
    @app.task(bind=True)
    async def where(self: Task[Any, Any]) -> dict[str, Any]:
        return {"delivery_info": self.request.delivery_info, "properties": self.request.properties}

    async with running_worker(app):
        result = await where.apply_async(priority=5)
        seen = await result.get(timeout=20)
    queue = app.conf.task_default_queue
    info = {
        "exchange": "taskq",
        "routing_key": queue,
        "priority": 5,
        "redelivered": False,
        "queue": queue,
        "delivery_count": 1,
    }
    assert seen["delivery_info"] == info
    assert seen["properties"] == {
        "correlation_id": result.id,
        "content_type": "json",
        "priority": 5,
        "delivery_info": info,
    }
    eager = await where.apply(priority=3)
    assert (await eager.get())["delivery_info"]["priority"] == 3
