"""Typed values through a real worker on each broker and store: datetime, date, time,
timedelta, UUID and Decimal reach the task and come back from `get()` as themselves, as
arguments, keyword arguments, results, a chain's passed result and a chord's results;
tuples come back as lists. Eager runs too."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from taskq import TaskQ, chord
from taskq.testing import memory_app, running_worker

pytestmark = pytest.mark.integration

VALUES: list[Any] = [
    dt.datetime(2026, 12, 2, 10, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    dt.datetime(2026, 12, 2, 10, 0),  # naive
    dt.date(2026, 12, 2),
    dt.time(10, 30, 0, 1),
    dt.timedelta(days=2, microseconds=3),
    uuid.uuid4(),
    Decimal("19.990"),
]


def assert_same(found: list[Any]) -> None:
    """`found` is VALUES, item by item of the same type, offset and digits."""
    assert [type(value) for value in found] == [type(value) for value in VALUES]
    assert found == VALUES
    assert [getattr(value, "tzinfo", None) for value in found[:2]] == [VALUES[0].tzinfo, None]
    assert str(found[-1]) == "19.990"


def add_tasks(app: TaskQ) -> None:
    @app.task(name="v.echo")
    async def echo(values: list[Any], *, named: dict[str, Any]) -> dict[str, Any]:
        """What arrived, with the type names the task saw."""
        return {
            "values": values,
            "named": named,
            "seen": [type(value).__name__ for value in [*values, *named.values()]],
        }

    @app.task(name="v.identity")
    def identity(value: Any) -> Any:  # a thread task: results of plain functions too
        return value

    @app.task(name="v.values_of")
    async def values_of(echoed: dict[str, Any]) -> list[Any]:
        return list(echoed["values"])


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = TaskQ("values", **app_settings)
    add_tasks(app)
    async with app:
        yield app


SEEN = [type(value).__name__ for value in VALUES] * 2


async def test_arguments_and_results_keep_their_types(app: TaskQ) -> None:
    named = {f"k{index}": value for index, value in enumerate(VALUES)}
    async with running_worker(app):
        result = await app.tasks["v.echo"].delay(VALUES, named=named)
        echoed = await result.get(timeout=20)
        assert echoed["seen"] == SEEN
        assert_same(echoed["values"])
        assert_same(list(echoed["named"].values()))
        stored = await app.AsyncResult(result.id).get(timeout=5)
        assert_same(stored["values"])


async def test_each_value_alone_is_a_result_of_its_type(app: TaskQ) -> None:
    async with running_worker(app):
        results = [await app.tasks["v.identity"].delay(value) for value in VALUES]
        assert_same([await result.get(timeout=20) for result in results])


async def test_tuples_come_back_as_lists(app: TaskQ) -> None:
    async with running_worker(app):
        result = await app.tasks["v.identity"].delay((1, (uuid.UUID(int=2), "x")))
        assert await result.get(timeout=20) == [1, [uuid.UUID(int=2), "x"]]


async def test_a_chain_passes_typed_results_on(app: TaskQ) -> None:
    echo, values_of = app.tasks["v.echo"], app.tasks["v.values_of"]
    async with running_worker(app):
        result = await (echo.s(VALUES, named={}) | values_of.s()).apply_async()
        assert_same(await result.get(timeout=20))


async def test_a_chord_callback_gets_typed_results(app: TaskQ) -> None:
    """On Redis the broker splices the members' results into the callback itself."""
    identity = app.tasks["v.identity"]
    async with running_worker(app):
        header = [identity.s(value) for value in VALUES]
        result = await chord(header, identity.s()).apply_async()
        assert_same(await result.get(timeout=30))


async def test_unique_for_tells_typed_arguments_apart(app: TaskQ) -> None:
    @app.task(unique_for=60)
    async def bill(amount: Decimal, due: dt.date) -> None: ...

    first = await bill.delay(Decimal("9.90"), dt.date(2026, 12, 2))
    again = await bill.delay(Decimal("9.90"), dt.date(2026, 12, 2))
    as_text = await bill.delay("9.90", "2026-12-02")
    assert first.id == again.id != as_text.id
    assert await (await app.connected_broker()).queue_length(app.conf.task_default_queue) == 2


async def test_eager_runs_hand_over_the_objects_and_store_typed_results() -> None:
    app = memory_app("values", task_always_eager=True)
    add_tasks(app)
    async with app:
        result = await app.tasks["v.echo"].delay(VALUES, named={"t": (1, 2)})
        echoed = await result.get()
        assert echoed["seen"] == [*SEEN[: len(VALUES)], "tuple"]  # no JSON between
        stored = await app.AsyncResult(result.id).get(timeout=5)
        assert_same(stored["values"])
        assert stored["named"] == {"t": [1, 2]}
