"""tolerant_map with an in-process worker on each broker: items retried, failures kept in
the result in item order, not failing the map."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskq import TaskError, TaskQ, tolerant_map
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = TaskQ("tolerant", **app_settings)
    async with app:
        yield app


async def test_each_item_is_retried_and_one_that_keeps_failing_holds_its_error(
    app: TaskQ,
) -> None:
    attempts: Counter[int] = Counter()

    @app.task
    async def process(item: int, scale: int) -> int:
        attempts[item] += 1
        if item < 0:
            raise ValueError(f"negative item {item}")
        if item == 3 and attempts[item] < 3:  # flaky: succeeds on its third try
            raise ConnectionError("try again")
        return item * scale

    @app.task
    def plain(item: str) -> str:
        return item.upper()

    async with running_worker(app):
        result = await tolerant_map(process.s(10), [1, -1, 3, 2], max_retries=3).apply_async()
        values = await result.get(timeout=20)
        no_retries = await tolerant_map(process.s(1), [-5], max_retries=0).apply_async()
        [error] = await no_retries.get(timeout=20)
        threads = await tolerant_map(plain.s(), ["a", "b"]).apply_async()
        assert await threads.get(timeout=20) == ["A", "B"]
    assert values[0] == 10 and values[2] == 30 and values[3] == 20
    failed = values[1]
    assert isinstance(failed, TaskError) and isinstance(failed, ValueError)
    assert str(failed) == "ValueError: negative item -1"
    assert failed.remote_traceback is not None and "negative item" in failed.remote_traceback
    assert attempts == {1: 1, -1: 4, 3: 3, 2: 1, -5: 1}
    assert isinstance(error, ValueError)


def test_tolerant_map_refuses_what_it_could_not_honour(app: TaskQ) -> None:
    @app.task
    async def process(item: int) -> int:
        return item

    with pytest.raises(TypeError, match=r"options \(queue\) go on the map"):
        tolerant_map(process.s().set(queue="other"), [1])
    with pytest.raises(TypeError, match="immutable"):
        tolerant_map(process.si(), [1])
    with pytest.raises(ValueError, match="max_retries must be a whole number"):
        tolerant_map(process.s(), [1], max_retries=-1)
    with pytest.raises(ValueError, match="countdown must be seconds"):
        tolerant_map(process.s(), [1], countdown=-2)


async def test_retries_of_an_item_wait_their_countdown(app: TaskQ) -> None:
    tried: list[float] = []

    @app.task
    async def flaky(item: int) -> int:
        tried.append(time.monotonic())
        if len(tried) < 3:
            raise ConnectionError("not yet")
        return item

    async with running_worker(app):
        result = await tolerant_map(flaky.s(), [7], countdown=0.2).apply_async()
        assert await result.get(timeout=20) == [7]
    assert [later - earlier >= 0.2 for earlier, later in itertools.pairwise(tried)] == [True] * 2
