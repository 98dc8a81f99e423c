"""What a result tells about its task, with an in-process worker on each broker: the call's
name, arguments, queue, worker, retries, when it finished, the tasks it published."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from support import eventually

from taskq import AsyncResult, GroupResult, ResultSet, TaskError, TaskQ, group, states
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


async def test_a_group_or_result_a_task_returns_comes_back_as_one(app: TaskQ) -> None:
    @app.task
    async def square(value: int) -> int:
        return value * value

    @app.task
    async def start_squares(count: int) -> GroupResult:
        result: GroupResult = await group(square.s(i) for i in range(count)).apply_async()
        return result

    @app.task
    async def start_chain(value: int) -> AsyncResult[int]:
        result: AsyncResult[int] = await (square.s(value) | square.s()).apply_async()
        return result

    async with running_worker(app):
        returned = await (await start_squares.delay(3)).get(timeout=20)
        assert isinstance(returned, GroupResult) and returned.app is app
        assert await returned.join(timeout=20) == [0, 1, 4]
        assert returned == await GroupResult.restore(returned.id, app=app)
        chained = await (await start_chain.delay(3)).get(timeout=20)
        assert isinstance(chained, AsyncResult) and chained.parent is not None
        assert await chained.get(timeout=20) == 81
        assert await chained.parent.get(timeout=20) == 9


async def test_collect_follows_what_each_task_returned_and_published(app: TaskQ) -> None:
    @app.task
    async def pow2(i: int) -> int:
        return i**2

    @app.task
    async def b(i: int) -> AsyncResult[int]:
        return await pow2.delay(i)

    @app.task
    async def a(how_many: int) -> GroupResult:
        result: GroupResult = await group(b.s(i) for i in range(how_many)).apply_async()
        return result

    async with running_worker(app):
        result = await a.delay(4)
        pairs = [pair async for pair in result.collect(timeout=20)]
    values = [value for _, value in pairs if not isinstance(value, AsyncResult | ResultSet)]
    assert values[-4:] == [0, 1, 4, 9]
    handles = [handle for handle, _ in pairs]
    assert handles[0] == result and isinstance(handles[1], GroupResult)
    assert len(handles) == 1 + 1 + 4 + 4  # a, its group, each b, each pow2: each once


async def test_group_and_result_set_queries(app: TaskQ) -> None:
    gate = anyio.Event()

    @app.task
    async def held(value: int) -> int:
        await gate.wait()
        if value < 0:
            raise ValueError("negative")
        return value

    async with running_worker(app):
        group_result = await group(held.s(1), held.s(-1)).apply_async()
        assert await group_result.waiting() and not await group_result.ready()
        gate.set()
        assert await group_result.join(timeout=20, propagate=False) == [1, ANY_ERROR]
        assert not await group_result.waiting()
        assert await group_result.failed() and not await group_result.successful()
        assert await group_result.completed_count() == 1
        assert group_result.parent is None and len(group_result.results) == 2

        results = ResultSet([await held.delay(2)])
        results.add(await held.delay(3))
        results.add(results[0])  # a member already: not added twice
        assert await results.get(timeout=20) == [2, 3]
        assert await results.successful() and await results.completed_count() == 2
        results.remove(results[0].id)
        assert await results.join(timeout=20) == [3]
        with pytest.raises(KeyError):
            results.remove("not-a-member")


class _AnyError:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskError) and isinstance(other, ValueError)


ANY_ERROR = _AnyError()


async def test_a_result_set_revokes_and_forgets_its_members(app: TaskQ) -> None:
    @app.task
    async def later(value: int) -> int:
        return value

    results = ResultSet([await later.delay(i) for i in range(2)])  # no worker yet
    await results.revoke()
    async with running_worker(app):
        await eventually(lambda: _all_revoked(results), timeout=20)
        assert [await r.status() for r in results] == [states.REVOKED] * 2
    await results.forget()
    assert [await r.status() for r in results] == [states.PENDING] * 2


async def _all_revoked(results: ResultSet) -> bool:
    return all([await result.status() == states.REVOKED for result in results])
