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


async def test_class_based_tasks_run_with_their_class_options(app: TaskQ) -> None:
    class Resize(app.Task):  # type: ignore[misc,name-defined]
        name = "images.resize"
        max_retries = 1
        default_retry_delay = 0

        def __init__(self) -> None:
            self.calls = 0

        async def run(self, path: str, size: int) -> str:
            self.calls += 1
            if self.calls == 1:
                raise self.retry()
            return f"{path}@{size}"

    class Thumbnail(Resize):
        name = None  # the class's own name
        queue = f"{app.conf.task_default_queue}-thumbs"

        def run(self, path: str, size: int = 64) -> str:  # a plain function, in a thread
            return f"thumb:{path}@{size}"

    resize = app.register_task(Resize())
    thumbnail = app.register_task(Thumbnail)
    assert app.tasks["images.resize"] is resize and resize.max_retries == 1
    assert thumbnail.name == f"{__name__}.{Thumbnail.__qualname__}"
    assert thumbnail.max_retries == 1 and thumbnail.queue.endswith("-thumbs")
    with pytest.raises(TypeError, match="missing a required argument: 'size'"):
        await resize.delay("a.png")
    async with running_worker(app, queues=[app.conf.task_default_queue, thumbnail.queue]):
        first = await resize.delay("a.png", 128)
        assert await first.get(timeout=20) == "a.png@128"
        assert await first.retries() == 1
        second = await thumbnail.delay("b.png")
        assert await second.get(timeout=20) == "thumb:b.png@64"
        assert await second.queue() == thumbnail.queue


def test_class_options_are_checked_as_the_decorators_are(app: TaskQ) -> None:
    class Typo(app.Task):  # type: ignore[misc,name-defined]
        max_retires = 3

        async def run(self) -> None: ...

    class BadPriority(app.Task):  # type: ignore[misc,name-defined]
        priority = 12

        async def run(self) -> None: ...

    class NoRun(app.Task):  # type: ignore[misc,name-defined]
        queue = "q"

    with pytest.raises(
        TypeError, match=r"Typo.max_retires: not a task option \(did you mean 'max_retries'"
    ):
        app.register_task(Typo)
    with pytest.raises(ValueError, match="priority must be an integer 0-9, not 12"):
        app.register_task(BadPriority)
    with pytest.raises(TypeError, match="NoRun has no run"):
        app.register_task(NoRun)
    assert not {"Typo", "BadPriority", "NoRun"} & {name.rsplit(".", 1)[-1] for name in app.tasks}
