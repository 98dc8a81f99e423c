"""The execution pipeline on the memory broker: the order of its middleware, a middleware that
answers without running the task, a task option a middleware declares, and eager runs
(`Task.apply`, `task_always_eager`) behaving as a worker's."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest
from support import eventually

from taskq import Middleware, SoftTimeLimitExceeded, TaskQ, chain, chord, states
from taskq.elements import stored_chain
from taskq.execution.job import CallNext, Job, Outcome
from taskq.options import Option
from taskq.task import Task
from taskq.testing import memory_app, running_worker


class Recorder(Middleware):
    """A middleware around execution that notes what it sees."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        self.seen.append(f"{self.name}:before")
        outcome = await call_next(job)
        self.seen.append(f"{self.name}:after:{outcome.status}")
        return outcome


def hooked(seen: list[str]) -> type[Task[Any, Any]]:
    class Hooked(Task[Any, Any]):
        def on_success(self, retval: Any, *rest: Any) -> None:
            seen.append(f"on_success:{retval}")

        def on_retry(self, exc: BaseException, *rest: Any) -> None:
            seen.append(f"on_retry:{type(exc).__name__}")

        def on_failure(self, exc: BaseException, *rest: Any) -> None:
            seen.append(f"on_failure:{type(exc).__name__}")

    return Hooked


async def wait_for(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - the state is filled by the worker's tasks
            await anyio.sleep(0.005)


async def test_middleware_wraps_hooks_which_run_after_the_result_is_stored() -> None:
    app = memory_app()
    seen: list[str] = []
    stored: list[str] = []

    class Checking(Recorder):
        async def handle(self, job: Job, call_next: CallNext) -> Outcome:
            outcome = await super().handle(job, call_next)
            meta = await (await app.connected_store()).get(job.message.id)
            stored.append(meta.status if meta else "nothing")
            return outcome

    app.middleware.add(Checking("outer", seen))
    app.middleware.add(Recorder("inner", seen))

    @app.task(base=hooked(seen))
    async def work() -> int:
        seen.append("body")
        return 7

    async with app, running_worker(app):
        assert await (await work.delay()).get(timeout=5) == 7
        await wait_for(lambda: stored)
    assert seen == [
        "outer:before",
        "inner:before",
        "body",
        "on_success:7",
        "inner:after:SUCCESS",
        "outer:after:SUCCESS",
    ]
    assert stored == [states.SUCCESS]


class Deny(Middleware):
    """Answers for tasks called with the header `deny`, without running them."""

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        if job.message.headers.get("deny"):
            return Outcome(states.REVOKED)
        return await call_next(job)


async def test_a_middleware_that_answers_itself_stops_the_chain_and_the_message_is_settled() -> (
    None
):
    app = memory_app()
    app.middleware.add(Deny())
    ran: list[str] = []

    @app.task
    async def work(tag: str) -> str:
        ran.append(tag)
        return tag

    async with app, running_worker(app):
        denied = await work.apply_async(["denied"], headers={"deny": True})
        allowed = await work.apply_async(["allowed"])
        assert await allowed.get(timeout=5) == "allowed"
        broker = await app.connected_broker()
        with anyio.fail_after(5):
            while await broker.queue_length(app.conf.task_default_queue):  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert await denied.status() == states.PENDING  # not run, so nothing recorded
    eager = await work.apply(["eagerly denied"], headers={"deny": True})
    assert await eager.status() == states.REVOKED
    assert ran == ["allowed"]


async def test_a_middleware_declares_a_task_option_and_reads_it() -> None:
    app = memory_app()
    audited: list[tuple[str, str]] = []

    class Audit(Middleware):
        options = (Option("audit", "none"),)

        async def handle(self, job: Job, call_next: CallNext) -> Outcome:
            outcome = await call_next(job)
            audited.append((job.task.options["audit"], outcome.status))
            return outcome

    app.middleware.add(Audit())

    @app.task(audit="full")
    async def pay() -> None: ...

    @app.task
    async def browse() -> None: ...

    async with app, running_worker(app, concurrency=1):
        await (await pay.delay()).get(timeout=5)
        await (await browse.delay()).get(timeout=5)
        await wait_for(lambda: len(audited) == 2)
    assert audited == [("full", states.SUCCESS), ("none", states.SUCCESS)]


def flaky_app(seen: list[str]) -> tuple[TaskQ, Task[Any, Any]]:
    """A task that times out (soft limit) once, raises once, then succeeds: retried twice."""
    app = memory_app()
    app.middleware.add(Recorder("mw", seen))

    @app.task(
        bind=True,
        base=hooked(seen),
        autoretry_for=(SoftTimeLimitExceeded, ConnectionError),
        max_retries=3,
        default_retry_delay=0.01,
        soft_time_limit=0.05,
    )
    async def flaky(self: Task[Any, Any]) -> int:
        seen.append(f"attempt:{self.request.retries}")
        if self.request.retries == 0:
            await anyio.sleep(5)  # cut short by the soft time limit
        if self.request.retries == 1:
            raise ConnectionError("down")
        return self.request.retries

    return app, flaky


async def test_an_eager_run_behaves_as_a_worker_with_hooks_retries_and_limits() -> None:
    on_worker: list[str] = []
    app, flaky = flaky_app(on_worker)
    async with app, running_worker(app):
        assert await (await flaky.delay()).get(timeout=10) == 2
        await wait_for(lambda: on_worker[-1] == "mw:after:SUCCESS")

    eagerly: list[str] = []
    app, flaky = flaky_app(eagerly)
    async with app:
        result = await flaky.apply()
        assert await result.get() == 2
        assert await app.AsyncResult(result.id).status() == states.SUCCESS  # stored
    assert eagerly == on_worker
    assert on_worker == [
        "mw:before", "attempt:0", "on_retry:SoftTimeLimitExceeded", "mw:after:RETRY",
        "mw:before", "attempt:1", "on_retry:ConnectionError", "mw:after:RETRY",
        "mw:before", "attempt:2", "on_success:2", "mw:after:SUCCESS",
    ]  # fmt: skip


async def test_always_eager_runs_links_and_chains_inline_and_can_propagate() -> None:
    app = memory_app(task_always_eager=True)
    seen: list[object] = []

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def record(value: object) -> None:
        seen.append(value)

    @app.task
    async def boom() -> None:
        raise KeyError("k")

    result = await add.apply_async((1, 2), link=record.s())
    assert await result.get() == 3 and seen == [3]
    chained = await (add.s(1, 2) | add.s(10) | record.s()).apply_async()
    assert await chained.status() == states.SUCCESS and seen == [3, 13]
    failed = await boom.delay()
    assert await failed.status() == states.FAILURE
    app.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        await boom.delay()
    assert await (await app.connected_broker()).queue_length("default") == 0


async def test_an_eager_chord_grows_by_add_to_chord() -> None:
    app = memory_app(task_always_eager=True)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(bind=True)
    async def grow(self: Task[..., int], x: int) -> int:
        await self.add_to_chord(add.s(x, x))
        return x

    @app.task(bind=True)
    def grow_in_thread(self: Task[..., int], x: int) -> int:
        self.add_to_chord_sync(add.s(x, x))
        return x

    @app.task
    async def listed(values: list[int]) -> list[int]:
        return values

    result = await chord([grow.s(1), add.s(2, 2), grow_in_thread.s(3)], listed.s()).apply_async()
    assert await result.get() == [1, 4, 3, 2, 6]
    alone = await grow.delay(1)
    with pytest.raises(ValueError, match="is not running as a member of a chord"):
        await alone.get()


async def test_a_chain_whose_stored_links_are_gone_is_dead_lettered_saying_so() -> None:
    app = memory_app()

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with app:
        message = app.build_message(add.name, [1, 2], {})
        message.chain = [stored_chain("expired")]
        await app.publish_messages([message])
        broker = await app.connected_broker()
        async with running_worker(app):

            async def dead_lettered() -> bool:
                return await broker.dead_letter_length("default") == 1

            await eventually(dead_lettered, timeout=5)
        [dead] = await broker.dead_letters("default")
        assert "links stored under 'chain:expired' are no longer stored" in dead.reason


async def test_a_signed_long_chain_runs_and_a_forged_stored_chunk_is_refused() -> None:
    app = memory_app(message_signing_key="k" * 32)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with app:
        store, broker = await app.connected_store(), await app.connected_broker()
        async with running_worker(app):
            result = await chain(add.s(0, 0), *(add.s(1) for _ in range(25))).apply_async()
            assert await result.get(timeout=5) == 25  # its chunks signed, and verified
            link = add.s(100).to_dict()
            link["options"]["task_id"] = "forged-link"
            await store.set_key("chain:forged", orjson.dumps({"links": [link]}), 60)
            message = app.build_message(add.name, [1, 2], {})
            message.chain = [stored_chain("forged")]
            await app.publish_messages([message])

            async def dead_lettered() -> bool:
                return await broker.dead_letter_length("default") == 1

            await eventually(dead_lettered, timeout=5)
        [dead] = await broker.dead_letters("default")
        assert "bad signature: the message is not signed" in dead.reason
        assert await store.get("forged-link") is None  # never published
