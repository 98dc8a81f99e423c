"""Canvas with an in-process worker on each broker: chains, groups, chords, nesting,
map/starmap/chunks, links, failure propagation, and batching of big groups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskq import ChordError, GroupResult, TaskError, TaskQ, chain, chord, group, signature
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


def make_app(app_settings: dict[str, Any]) -> TaskQ:
    app = TaskQ("canvas", **app_settings)

    @app.task(name="t.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.mul")
    async def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="t.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="t.summarize")
    async def summarize(value: int, label: str) -> str:
        return f"{label} {value}"

    @app.task(name="t.fail")
    async def fail(*args: Any) -> None:
        raise ValueError("boom")

    @app.task(name="t.record")
    async def record(*args: Any) -> list[Any]:
        return list(args)

    return app


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = make_app(app_settings)
    async with app:
        yield app


def t(app: TaskQ, name: str) -> Any:
    return app.tasks[f"t.{name}"]


async def test_chain_passes_results_and_walks_back(app: TaskQ) -> None:
    async with running_worker(app):
        add, mul, summarize = t(app, "add"), t(app, "mul"), t(app, "summarize")
        workflow = add.s(4, 5) | mul.s(2) | summarize.s("Result:")
        result = await workflow.apply_async()
        assert await result.get(timeout=10) == "Result: 18"
        assert await result.parent.get(timeout=10) == 18
        assert await result.parent.parent.get(timeout=10) == 9
        assert await chain(add.s(1, 1), add.si(10, 10)).delay() is not None


async def test_immutable_signature_ignores_the_previous_result(app: TaskQ) -> None:
    async with running_worker(app):
        add = t(app, "add")
        result = await (add.s(1, 1) | add.si(10, 10)).apply_async()
        assert await result.get(timeout=10) == 20


async def test_failure_stops_the_chain_and_the_last_result_raises(app: TaskQ) -> None:
    async with running_worker(app):
        add, fail = t(app, "add"), t(app, "fail")
        result = await (add.s(1, 1) | fail.s() | add.s(5)).apply_async()
        with pytest.raises(ValueError, match="boom"):
            await result.get(timeout=10)


async def test_a_long_chain_runs_every_link_in_order(app: TaskQ) -> None:
    async with running_worker(app):
        add, record = t(app, "add"), t(app, "record")
        links = [add.s(1) for _ in range(44)]
        result = await chain(add.s(0, 1), *links, record.s("end")).apply_async()
        assert await result.get(timeout=30) == [45, "end"]
        assert await result.parent.get(timeout=10) == 45
        store = await app.connected_store()
        walked = result
        for expected in range(45, 0, -1):  # every link's own result, back to the first
            walked = walked.parent
            assert (await store.get(walked.id)).result == expected  # type: ignore[union-attr]


async def test_a_chord_and_a_group_early_in_a_long_chain(app: TaskQ) -> None:
    async with running_worker(app):
        add, tsum = t(app, "add"), t(app, "tsum")
        ones = [add.s(1) for _ in range(30)]
        chorded = chain(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), *ones)
        assert await (await chorded.apply_async()).get(timeout=30) == 36
        grouped = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), *ones)
        assert await (await grouped.apply_async()).get(timeout=30) == 37


async def test_a_failure_early_in_a_long_chain_fails_every_later_link(app: TaskQ) -> None:
    async with running_worker(app):
        add, fail = t(app, "add"), t(app, "fail")
        result = await chain(add.s(1, 1), fail.s(), *(add.s(1) for _ in range(40))).apply_async()
        with pytest.raises(ValueError, match="boom"):
            await result.get(timeout=10)
        with pytest.raises(ValueError, match="boom"):
            await result.parent.parent.get(timeout=10)  # a link stored, never published


async def test_group_results_in_order_and_restore(app: TaskQ) -> None:
    async with running_worker(app):
        add = t(app, "add")
        result = await group(add.s(i, i) for i in range(10)).apply_async()
        assert isinstance(result, GroupResult)
        assert await result.get(timeout=10) == [2 * i for i in range(10)]
        assert (
            await result.completed_count() == 10
            and await result.ready()
            and not await result.failed()
        )
        restored = await GroupResult.restore(result.id, app=app)
        assert restored is not None and await restored.get(timeout=10) == [2 * i for i in range(10)]
        fewer = GroupResult(result.id, result.results[:3], app=app)
        await fewer.save()  # a group can be saved again: the last save is what is restored
        again = await GroupResult.restore(result.id, app=app)
        assert again is not None and await again.get(timeout=10) == [0, 2, 4]


async def test_chord_passes_ordered_results_to_the_callback(app: TaskQ) -> None:
    async with running_worker(app):
        add, tsum = t(app, "add"), t(app, "tsum")
        result = await chord((add.s(i, i) for i in range(20)), tsum.s()).apply_async()
        assert await result.get(timeout=10) == sum(2 * i for i in range(20))
        record = t(app, "record")
        ordered = await chord([add.s(i, 0) for i in range(5)])(record.s("tail")).apply_async()
        assert await ordered.get(timeout=10) == [[0, 1, 2, 3, 4], "tail"]


async def test_empty_chord_calls_back_with_an_empty_list(app: TaskQ) -> None:
    async with running_worker(app):
        result = await chord([], t(app, "tsum").s()).apply_async()
        assert await result.get(timeout=10) == 0


async def test_chain_of_chord_then_task(app: TaskQ) -> None:
    async with running_worker(app):
        add, tsum, mul = t(app, "add"), t(app, "tsum"), t(app, "mul")
        workflow = chain(chord(group(add.s(i, i) for i in range(5)), tsum.s()), mul.s(2))
        assert await (await workflow.apply_async()).get(timeout=10) == 40


async def test_group_of_chains_and_chord_with_chains_in_the_header(app: TaskQ) -> None:
    async with running_worker(app):
        add, mul, tsum = t(app, "add"), t(app, "mul"), t(app, "tsum")
        chains = group((add.s(i, i) | mul.s(10)) for i in range(4))
        assert await (await chains.apply_async()).get(timeout=10) == [0, 20, 40, 60]
        header = [add.s(i, 1) | mul.s(2) for i in range(4)]
        assert await (await chord(header, tsum.s()).apply_async()).get(timeout=10) == 2 * (
            1 + 2 + 3 + 4
        )


async def test_chain_of_chords(app: TaskQ) -> None:
    async with running_worker(app):
        add, tsum = t(app, "add"), t(app, "tsum")
        first = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
        second = chord([add.s(10), add.s(20)], tsum.s())
        assert await (await (first | second).apply_async()).get(timeout=10) == (6 + 10) + (6 + 20)


async def test_failing_member_fails_the_callback_with_chord_error(app: TaskQ) -> None:
    async with running_worker(app):
        add, fail, tsum, record = t(app, "add"), t(app, "fail"), t(app, "tsum"), t(app, "record")
        callback = tsum.s()
        errback = callback.link_error(record.s())
        del errback
        result = await chord([add.s(1, 1), fail.s(), add.s(2, 2)], callback).apply_async()
        with pytest.raises(TaskError, match="chord member 1") as caught:
            await result.get(timeout=10)
        assert caught.value.exc_type.endswith(ChordError.__name__)


async def test_link_and_link_error(app: TaskQ) -> None:
    async with running_worker(app):
        add, fail, record = t(app, "add"), t(app, "fail"), t(app, "record")
        linked = record.s("after")
        result = await add.apply_async((2, 2), link=linked)
        assert await result.get(timeout=10) == 4
        frozen = await record.s("direct").apply_async()
        assert await frozen.get(timeout=10) == ["direct"]
        errback = record.s()
        failed = await fail.apply_async(link_error=errback)
        with pytest.raises(ValueError):
            await failed.get(timeout=10)


async def test_nested_groups_in_chord_headers_and_workflow_links(app: TaskQ) -> None:
    async with running_worker(app):
        add, tsum, record = t(app, "add"), t(app, "tsum"), t(app, "record")
        unrolled = chord([add.s(1, 1), group(add.s(2, 2), add.s(3, 3))], tsum.s())
        assert await (await unrolled()).get(timeout=10) == 12
        nested = chord([add.s(1, 0), add.s(1, 1) | group(add.s(1), add.s(2))], record.s())
        assert await (await nested()).get(timeout=10) == [[1, [3, 4]]]
        grouped, after_group = group(add.s(1, 1), add.s(2, 2)), record.s("group")
        grouped.link(after_group)
        chained, after_chain = chain(add.s(1, 1), add.s(1)), record.s("chain")
        chained.link(after_chain)
        links = [after_group.freeze(), after_chain.freeze()]  # their results, by id
        await grouped()
        await chained()
        assert [await link.get(timeout=10) for link in links] == [[[2, 4], "group"], [3, "chain"]]


async def test_map_starmap_and_chunks(app: TaskQ) -> None:
    async with running_worker(app):
        add = t(app, "add")
        assert await (await add.starmap([(1, 2), (3, 4)]).apply_async()).get(timeout=10) == [3, 7]
        pairs = [(i, i) for i in range(10)]
        chunked = await add.chunks(pairs, 3).apply_async()
        assert await chunked.get(timeout=10) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
        double = t(app, "tsum")
        assert await (await double.map([[1, 2], [3]]).apply_async()).get(timeout=10) == [3, 3]


async def test_signature_by_name_without_the_function(app: TaskQ) -> None:
    async with running_worker(app):
        by_name = signature("t.add", [1, 2], app=app)
        assert await (await by_name.apply_async()).get(timeout=10) == 3
        with pytest.raises(TypeError, match="unknown signature option"):
            by_name.set(retry_forever=True)


async def test_big_group_is_published_in_one_batch(app_settings: dict[str, Any]) -> None:
    app = make_app(app_settings)
    add = t(app, "add")
    async with app:
        broker = await app.connected_broker()
        calls: list[int] = []
        original = broker.publish_many

        async def counting(items: Any) -> None:
            calls.append(len(items))
            await original(items)

        broker.publish_many = counting  # type: ignore[method-assign]
        await group(add.s(i, i) for i in range(10_000)).apply_async()
        assert calls == [10_000]
        assert await broker.queue_length(app.conf.task_default_queue) == 10_000
