"""Declaring tasks, with an in-process worker on each broker: class-based tasks, argument
checks at publish, retries with an eta or expiry, what a task knows of its delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskq import TaskQ
from taskq.errors import BadArgumentsError
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
