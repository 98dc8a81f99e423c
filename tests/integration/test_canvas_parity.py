"""Canvas at Celery parity, run by a real `taskq worker` subprocess on every broker: groups
nested in chord headers, chords nested in chains in chords, workflow-level callbacks and
errbacks (each run exactly once), `self.replace`, `freeze()` ids, the signature shortcuts,
and the error classes `get()` raises.

One worker per broker serves the whole module (the servers are shared: the module has a
queue, and on Redis a key prefix, of its own); each test has a producer app of its own. The
producer declares the worker's tasks by name only (`itest_tasks` holds the functions), as an
app that publishes tasks it does not run would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WorkerProcess, eventually, worker_broker_url, worker_environment

from taskq import ChordError, GroupResult, TaskQ, TaskRevokedError, chain, chord, group, signature

pytestmark = pytest.mark.integration

BROKERS = ["sqlite", "redis", "redis-cluster", "amqp"]
TIMEOUT = 20


@pytest.fixture(scope="module", params=BROKERS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def place(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The broker's files: SQLite databases, the worker's log."""
    return tmp_path_factory.mktemp(f"canvas-{kind}")


@pytest.fixture(scope="module")
def queue(kind: str) -> str:
    return f"canvas-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def broker_url(kind: str, request: pytest.FixtureRequest, place: Path) -> str:
    return worker_broker_url(kind, request, place, f"t{uuid.uuid4().hex[:12]}:")


@pytest.fixture(scope="module")
def results_url(kind: str, place: Path) -> str | None:
    """RabbitMQ keeps no results: an SQLite file. The other brokers' follow the broker."""
    return f"sqlite:///{place}/results.db" if kind == "amqp" else None


@pytest.fixture(scope="module")
def transport_options(kind: str) -> dict[str, object]:
    options: dict[str, object] = {"polling_interval": 0.02}
    return options | ({"publish_timeout": 3} if kind == "amqp" else {})


@pytest.fixture(scope="module")
def worker(
    broker_url: str,
    results_url: str | None,
    transport_options: dict[str, object],
    queue: str,
    place: Path,
) -> Iterator[WorkerProcess]:
    env = {**worker_environment(broker_url, transport_options), "TASKQ_TASK_DEFAULT_QUEUE": queue}
    if results_url is not None:
        env["TASKQ_RESULT_BACKEND"] = results_url
    process = WorkerProcess(env, place / "worker.log", ["-c", "20"])
    yield process
    process.stop()


@pytest.fixture
async def app(
    worker: WorkerProcess,
    broker_url: str,
    results_url: str | None,
    transport_options: dict[str, object],
    queue: str,
) -> AsyncIterator[TaskQ]:
    """The producer, with the worker's tasks declared by name (never run here)."""
    producer = TaskQ(
        "producer",
        broker=broker_url,
        backend=results_url,
        broker_transport_options=transport_options,
        task_default_queue=queue,
    )
    for name in ("add", "identity", "tsum", "fail", "note", "ran_at"):
        producer.task(name=f"itest.{name}")(_declared)
    async with producer:
        yield producer


def _declared(*args: Any) -> None:
    raise AssertionError("the producer does not run tasks")


def s(app: TaskQ, name: str, *args: Any) -> Any:
    """The signature of the worker's task `itest.<name>` with these arguments."""
    return signature(f"itest.{name}", list(args), app=app)


def si(app: TaskQ, name: str, *args: Any) -> Any:
    return signature(f"itest.{name}", list(args), app=app, immutable=True)


class Notes:
    """The file `itest.note` callbacks append their arguments to, one JSON line per call."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def read(self) -> list[Any]:
        try:
            with open(self.path) as lines:
                return [json.loads(line) for line in lines]
        except FileNotFoundError:
            return []

    async def exactly(self, labels: list[str], app: TaskQ) -> dict[str, list[Any]]:
        """Wait until a note of each label (its last argument) came and the queue has
        drained, check that nothing more came (each callback ran exactly once), and return
        the notes by label."""

        async def arrived() -> bool:
            return len(self.read()) >= len(labels)

        await eventually(arrived, timeout=TIMEOUT)
        broker = await app.connected_broker()

        async def drained() -> bool:
            return await broker.queue_length(app.conf.task_default_queue) == 0

        await eventually(drained, timeout=TIMEOUT)
        lines = self.read()
        assert sorted(line[-1] for line in lines) == sorted(labels)
        return {line[-1]: line for line in lines}


@pytest.fixture
def notes(tmp_path: Path) -> Notes:
    return Notes(tmp_path / "notes.jsonl")


def note(app: TaskQ, notes: Notes, *args: Any) -> Any:
    return s(app, "note", *args, notes.path)


# -- nesting ---------------------------------------------------------------------------


async def test_a_group_in_a_chord_header_is_unrolled_into_its_results(app: TaskQ) -> None:
    header = [s(app, "add", 1, 1), group(s(app, "add", 2, 2), s(app, "add", 3, 3))]
    result = await chord(header, s(app, "identity")).apply_async()
    assert await result.get(timeout=TIMEOUT) == [2, 4, 6]
    summed = await chord(header, s(app, "tsum"))()
    assert await summed.get(timeout=TIMEOUT) == 12


async def test_a_chain_ending_in_a_group_in_a_chord_header_gives_a_nested_list(
    app: TaskQ,
) -> None:
    ends_in_group = chain(s(app, "identity", 42), group(s(app, "identity"), s(app, "add", 1)))
    result = await chord([s(app, "identity", 1), ends_in_group], s(app, "identity"))()
    assert await result.get(timeout=TIMEOUT) == [1, [42, 43]]


async def test_a_chord_in_a_chain_in_a_chord(app: TaskQ) -> None:
    inner = chain(s(app, "add", 1, 1), chord([s(app, "add", 1), s(app, "add", 2)], s(app, "tsum")))
    result = await chord([inner, s(app, "add", 10, 10)], s(app, "tsum"))()
    assert await result.get(timeout=TIMEOUT) == (3 + 4) + 20


async def test_nine_chained_chords(app: TaskQ) -> None:
    chords = [chord([s(app, "add", i), s(app, "add", 0)], s(app, "tsum")) for i in range(9)]
    result = await chain(si(app, "add", 1, 0), *chords)()
    expected = 1
    for i in range(9):
        expected = (expected + i) + expected
    assert await result.get(timeout=TIMEOUT) == expected


async def test_a_failure_in_a_nested_header_fails_the_outer_chord(app: TaskQ) -> None:
    in_chord = chord([s(app, "add", 1, 1), chord([s(app, "fail")], s(app, "tsum"))], s(app, "tsum"))
    in_group = chord(
        [s(app, "add", 1, 1), s(app, "identity", 1) | group(s(app, "fail"), s(app, "add", 1))],
        s(app, "tsum"),
    )
    for result in [await in_chord(), await in_group()]:
        with pytest.raises(ChordError, match=r"chord member 1 .* failed: .*ValueError: boom"):
            await result.get(timeout=TIMEOUT)


# -- callbacks and errbacks on whole workflows -----------------------------------------


async def test_workflow_links_run_once_with_celerys_arguments(app: TaskQ, notes: Notes) -> None:
    grouped = group(s(app, "add", 1, 1), s(app, "add", 2, 2))
    grouped.link(note(app, notes, "group"))
    chained = chain(s(app, "add", 1, 1), s(app, "add", 10))
    chained.link(note(app, notes, "chain"))
    chorded = chord([s(app, "add", 1, 1), s(app, "add", 2, 2)], s(app, "tsum"))
    chorded.link(note(app, notes, "chord"))
    inner = chain(s(app, "add", 5, 5), s(app, "add", 1))
    inner.link(note(app, notes, "inner"))
    outer = chain(inner, s(app, "add", 100))
    outer.link(note(app, notes, "outer"))
    called = s(app, "add", 3, 3)
    results = [await grouped(), await chained(), await chorded(), await outer()]
    results.append(await called.apply_async(link=note(app, notes, "apply_async")))
    assert await results[0].get(timeout=TIMEOUT) == [2, 4]
    assert [await r.get(timeout=TIMEOUT) for r in results[1:]] == [12, 6, 111, 6]
    called = await notes.exactly(["group", "chain", "chord", "inner", "outer", "apply_async"], app)
    assert called == {
        "group": [[2, 4], "group"],
        "chain": [12, "chain"],
        "chord": [6, "chord"],
        "inner": [11, "inner"],
        "outer": [111, "outer"],
        "apply_async": [6, "apply_async"],
    }


async def test_workflow_errbacks_run_once_with_the_failed_task(app: TaskQ, notes: Notes) -> None:
    chained = chain(s(app, "add", 1, 1), s(app, "fail"), s(app, "add", 1))
    chained.link_error(note(app, notes, "chain"))
    failing_chain = await chained()
    on_error = chain(s(app, "fail"), s(app, "add", 1)).on_error(note(app, notes, "on_error"))
    failing_on_error = await on_error()
    chorded = chord([s(app, "add", 1, 1), s(app, "fail")], s(app, "tsum"))
    chorded.link_error(note(app, notes, "chord"))
    failing_chord = await chorded()
    grouped = group(s(app, "fail"), s(app, "add", 1, 1), s(app, "fail"))
    failing_group = await grouped.on_error(note(app, notes, "group"))()
    for result in (failing_chain, failing_on_error):
        with pytest.raises(ValueError, match="boom"):
            await result.get(timeout=TIMEOUT)
    with pytest.raises(ChordError, match="chord member 1"):
        await failing_chord.get(timeout=TIMEOUT)
    assert await failing_group.get(timeout=TIMEOUT, propagate=False) is not None
    by_label = await notes.exactly(["chain", "on_error", "chord", "group"], app)
    boom = {"type": "ValueError", "message": "boom"}
    assert by_label["chain"] == [failing_chain.parent.id, boom, "chain"]
    assert by_label["on_error"] == [failing_on_error.parent.id, boom, "on_error"]
    chord_task_id, chord_error, _ = by_label["chord"]
    assert chord_task_id == failing_chord.id and chord_error["type"] == "taskq.errors.ChordError"
    group_error = by_label["group"][1]
    assert group_error["type"] == "taskq.errors.ChordError"
    assert failing_group.results[0].id in group_error["message"]


# -- replace ---------------------------------------------------------------------------


async def test_replace_in_a_chain_and_a_chord_header_keeps_order(app: TaskQ) -> None:
    replaced = signature("itest.add_replaced", [2, 3], app=app)
    in_chain = await chain(
        s(app, "add", 1, 1), signature("itest.add_replaced", [5], app=app), s(app, "add", 100)
    )()
    assert await in_chain.get(timeout=TIMEOUT) == 107
    ones = [s(app, "add", 1) for _ in range(25)]  # the rest of the chain stored by reference
    in_long_chain = await chain(s(app, "add", 1, 1), s(app, "add_replaced", 5), *ones)()
    assert await in_long_chain.get(timeout=TIMEOUT) == 32
    header = [
        s(app, "add", 1, 0),
        replaced,
        signature("itest.spread", [[10, 20]], app=app),
        s(app, "add", 4, 0),
    ]
    in_chord = await chord(header, s(app, "identity"))()
    assert await in_chord.get(timeout=TIMEOUT) == [1, 5, [11, 21], 4]
    alone = replaced.freeze()
    await replaced()
    assert await alone.get(timeout=TIMEOUT) == 5


# -- the signature API ------------------------------------------------------------------


async def test_freeze_gives_the_ids_results_arrive_under(app: TaskQ) -> None:
    workflow = chain(s(app, "add", 1, 1), s(app, "add", 2))
    frozen = workflow.freeze()
    assert workflow.id == frozen.id and frozen.parent is not None
    result = await workflow()
    assert result.id == frozen.id and result.parent.id == frozen.parent.id
    assert await frozen.get(timeout=TIMEOUT) == 4 and await frozen.parent.get() == 2
    grouped = group(s(app, "add", i, i) for i in range(3))
    frozen_group = grouped.freeze()
    assert grouped.id == frozen_group.id
    assert await (await grouped()).get(timeout=TIMEOUT) == [0, 2, 4]
    assert await frozen_group.get(timeout=TIMEOUT) == [0, 2, 4]
    restored = await GroupResult.restore(frozen_group.id, app=app)
    assert restored is not None and [r.id for r in restored] == [r.id for r in frozen_group]
    chorded = chord([s(app, "add", 1, 1)], s(app, "tsum"))
    assert chorded.freeze().id == chorded.id == chorded.body.id
    assert await (await chorded()).get(timeout=TIMEOUT) == 2


async def test_tasks_signatures_and_skew(app: TaskQ) -> None:
    add, identity = app.tasks["itest.add"], app.tasks["itest.identity"]
    result = await chain(add.signature((1, 1), countdown=0.1), identity)()
    assert await result.get(timeout=TIMEOUT) == 2
    with pytest.raises(TypeError, match=r"group\(\) takes signatures.*itest.add.s"):
        group(add, add.s(1, 1))
    published = time.time()
    skewed = group(app.tasks["itest.ran_at"].s() for _ in range(3)).skew(start=0, step=1)
    ran = await (await skewed()).get(timeout=TIMEOUT)
    for countdown, at in enumerate(ran):
        assert at >= published + countdown - 0.05
    chunked = add.chunks([(i, i) for i in range(5)], 2).group()
    assert await (await chunked()).get(timeout=TIMEOUT) == [[0, 2], [4, 6], [8]]


async def test_errors_are_instances_of_their_documented_classes(app: TaskQ) -> None:
    expired = await s(app, "add", 1, 1).apply_async(expires=-1)
    with pytest.raises(TaskRevokedError):
        await expired.get(timeout=TIMEOUT)
    revoked = s(app, "add", 2, 2).set(countdown=2)
    handle = revoked.freeze()
    await app.control.revoke([handle.id])
    await revoked()
    with pytest.raises(TaskRevokedError):
        await handle.get(timeout=TIMEOUT)
    failed = await chord([s(app, "fail")], s(app, "tsum"))()
    with pytest.raises(ChordError):
        await failed.get(timeout=TIMEOUT)


async def test_add_to_chord_grows_the_chord_its_callback_waits_for(app: TaskQ) -> None:
    header = [s(app, "add", 1, 1), s(app, "grow_chord", 10, 1), s(app, "add", 2, 2)]
    values = await (await chord(header, s(app, "identity"))()).get(timeout=TIMEOUT)
    [ids] = [value for value in values if isinstance(value, list)]
    assert values == [2, ids, 4, 10]  # the added member's result comes last
    assert await app.AsyncResult(ids[0]).get(timeout=TIMEOUT) == 10


async def test_add_to_chord_twice_appends_in_the_order_added(app: TaskQ) -> None:
    grown = chord([s(app, "grow_chord", 5, 3), s(app, "add", 1, 1)], s(app, "identity"))
    values = await (await grown()).get(timeout=TIMEOUT)
    assert values[1:] == [2, 5, [6, 6], [7, 7]]
    assert len(values[0]) == 3


async def test_add_to_chord_sync_grows_the_chord_of_a_plain_function(app: TaskQ) -> None:
    grown = chord([s(app, "grow_chord_in_thread", 7), s(app, "add", 1, 1)], s(app, "identity"))
    added_id, *rest = await (await grown()).get(timeout=TIMEOUT)
    assert rest == [2, 7]
    assert await app.AsyncResult(added_id).get(timeout=TIMEOUT) == 7


async def test_add_to_chord_from_a_task_outside_a_chord_is_a_clear_error(app: TaskQ) -> None:
    alone = await s(app, "grow_chord", 1, 1).apply_async()
    with pytest.raises(ValueError, match=r"grow_chord\.add_to_chord\(\): task \w+ is not"):
        await alone.get(timeout=TIMEOUT)
    in_group = await group(s(app, "grow_chord", 1, 1), s(app, "add", 1, 1))()
    with pytest.raises(ValueError, match="not running as a member of a chord"):
        await in_group.get(timeout=TIMEOUT)
