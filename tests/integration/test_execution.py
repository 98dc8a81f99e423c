"""Execution semantics with an in-process worker on each broker: retries, time limits,
rate limits, expiry, revocation, idempotency keys, hooks and middleware, dead letters."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from support import eventually

from taskq import TaskError, TaskQ, group, states
from taskq.errors import (
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
)
from taskq.message import peek_id
from taskq.middleware import Middleware
from taskq.task import Task
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = TaskQ("exec", **app_settings)
    async with app:
        yield app


def worker_lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[str]:
    """What the worker logged about the task `task_id`."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "taskq.worker" and f"[{task_id}]" in record.getMessage()
    ]


async def test_autoretry_backoff_grows_then_fails_with_the_original_error(app: TaskQ) -> None:
    attempts: list[float] = []

    @app.task(
        autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.2, retry_jitter=False
    )
    async def flaky() -> None:
        attempts.append(time.monotonic())
        raise ConnectionError("down")

    async with running_worker(app):
        result = await flaky.delay()
        with pytest.raises(TaskError) as caught:
            await result.get(timeout=20)
    assert isinstance(caught.value, ConnectionError) and "down" in str(caught.value)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) == 4
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert expected - 0.05 <= gap <= expected + 0.5, gaps
    broker = await app.connected_broker()
    [letter] = await broker.dead_letters(app.conf.task_default_queue)
    assert letter.reason.startswith("retries exhausted (3): ConnectionError: down")
    assert "Traceback" in letter.reason


async def test_explicit_retry_shows_retry_state_then_succeeds(app: TaskQ) -> None:
    gate = anyio.Event()

    @app.task(bind=True)
    async def eventually_ok(self: Task[Any, Any]) -> int:
        if self.request.retries == 0:
            raise self.retry(exc=ValueError("not yet"), countdown=0.3)
        await gate.wait()
        return self.request.retries

    async with running_worker(app):
        result = await eventually_ok.delay()

        async def retrying() -> bool:
            return await result.status() == states.RETRY

        await eventually(retrying)
        gate.set()
        assert await result.get(timeout=10) == 1


async def test_retry_past_the_limit_without_exc_raises_max_retries_exceeded(app: TaskQ) -> None:
    @app.task(bind=True, max_retries=1)
    async def stubborn(self: Task[Any, Any]) -> None:
        raise self.retry(countdown=0.01)

    async with running_worker(app):
        result = await stubborn.delay()
        with pytest.raises(TaskError) as caught:
            await result.get(timeout=10)
    assert caught.value.exc_type == f"{MaxRetriesExceededError.__module__}.MaxRetriesExceededError"


async def test_soft_time_limit_is_raised_inside_and_can_be_caught(app: TaskQ) -> None:
    @app.task(soft_time_limit=0.2)
    async def careful() -> str:
        try:
            await anyio.sleep(10)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "finished"

    async with running_worker(app):
        assert await (await careful.delay()).get(timeout=10) == "cleaned up"


async def test_hard_time_limit_fails_the_task_and_frees_the_slot(app: TaskQ) -> None:
    @app.task
    async def endless() -> None:
        await anyio.sleep(60)

    @app.task
    def endless_thread() -> None:
        time.sleep(3)

    @app.task
    async def quick() -> str:
        return "quick"

    async with running_worker(app, concurrency=1):
        stuck = await endless.apply_async(time_limit=0.3)
        stuck_thread = await endless_thread.apply_async(time_limit=0.3)
        after = await quick.delay()
        assert await after.get(timeout=10) == "quick"
        for result in (stuck, stuck_thread):
            with pytest.raises(TaskError, match="hard time limit") as caught:
                await result.get(timeout=1)
            assert caught.value.exc_type.endswith("TimeLimitExceeded")


async def test_rate_limit_delays_without_holding_a_slot(app: TaskQ) -> None:
    starts: list[float] = []

    @app.task(rate_limit="5/s")
    async def limited() -> None:
        starts.append(time.monotonic())

    @app.task
    async def free() -> float:
        return time.monotonic()

    async with running_worker(app, concurrency=2):
        limited_results = [await limited.delay() for _ in range(6)]
        unlimited = await free.delay()
        finished_free = await unlimited.get(timeout=10)
        for result in limited_results:
            await result.get(timeout=10)
    assert finished_free < starts[-1]
    assert starts[-1] - starts[0] >= 4 * 0.2  # 5 intervals of 0.2 s, less start-up jitter


async def test_expired_task_is_revoked_not_run(
    app: TaskQ, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    ran: list[int] = []

    @app.task
    async def late() -> None:
        ran.append(1)

    result = await late.apply_async(expires=-1)  # already past when a worker sees it
    async with running_worker(app):
        with pytest.raises(TaskError, match="expired") as caught:
            await result.get(timeout=10)
    assert caught.value.exc_type == f"{TaskRevokedError.__module__}.TaskRevokedError"
    assert await result.status() == states.REVOKED and not ran
    expected = f"Task {late.name}[{result.id}] expired: discarded before it ran"
    assert worker_lines(caplog, result.id) == [expected]


async def test_revoke_before_a_worker_exists_is_honoured(
    app: TaskQ, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    ran: list[str] = []

    @app.task
    async def job(name: str) -> str:
        ran.append(name)
        return name

    skipped = await job.delay("skipped")
    await skipped.revoke()
    kept = await job.delay("kept")
    async with running_worker(app):
        assert await kept.get(timeout=10) == "kept"
        with pytest.raises(TaskError, match="revoked"):
            await skipped.get(timeout=10)
    assert ran == ["kept"]
    expected = f"Task {job.name}[{skipped.id}] revoked: discarded before it ran"
    assert worker_lines(caplog, skipped.id) == [expected]


async def test_revoke_with_terminate_cancels_a_running_task(
    app: TaskQ, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    started = anyio.Event()

    @app.task(acks_late=True)
    async def long() -> None:
        started.set()
        await anyio.sleep(60)

    async with running_worker(app):
        result = await long.delay()
        await started.wait()
        await app.control.revoke(result.id, terminate=True)
        with pytest.raises(TaskError, match="revoked"):
            await result.get(timeout=10)
    broker = await app.connected_broker()
    assert await broker.queue_length(app.conf.task_default_queue) == 0
    expected = f"Task {long.name}[{result.id}] revoked: terminated while running"
    assert worker_lines(caplog, result.id) == [expected]


async def test_a_slot_whose_task_was_terminated_runs_the_next_tasks(app: TaskQ) -> None:
    started = anyio.Event()

    @app.task
    async def long() -> None:
        started.set()
        await anyio.sleep(60)

    @app.task
    async def short(n: int) -> int:
        return n

    async with running_worker(app, concurrency=1):
        doomed = await long.delay()
        await started.wait()
        await app.control.revoke(doomed.id, terminate=True)
        with pytest.raises(TaskError, match="revoked"):
            await doomed.get(timeout=10)
        assert [await (await short.delay(n)).get(timeout=10) for n in range(3)] == [0, 1, 2]


async def test_a_worker_stopped_as_its_tasks_finish_has_stored_every_result(app: TaskQ) -> None:
    count = 500
    finished = anyio.Event()
    done = 0

    @app.task
    async def quick() -> None:
        nonlocal done
        done += 1
        if done == count:
            finished.set()

    results = await group(quick.s() for _ in range(count)).apply_async()
    async with running_worker(app):
        await finished.wait()
    store = await app.connected_store()
    metas = await store.get_many([result.id for result in results])
    assert [meta and meta.status for meta in metas] == [states.SUCCESS] * count


async def test_idempotency_key_enqueues_once_under_concurrent_publishers(app: TaskQ) -> None:
    @app.task
    async def charge(order: str) -> str:
        return order

    ids: list[str] = []

    async def publish() -> None:
        ids.append((await charge.apply_async(["o-42"], idempotency_key="order-42")).id)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(publish)
    broker = await app.connected_broker()
    assert len(set(ids)) == 1
    assert await broker.queue_length(app.conf.task_default_queue) == 1
    other = await charge.apply_async(["o-43"], idempotency_key="order-43")
    assert other.id != ids[0]


async def test_unique_for_deduplicates_by_name_and_arguments(app: TaskQ) -> None:
    @app.task(unique_for=60)
    async def sync_account(account: str) -> None: ...

    first = await sync_account.delay("a")
    again = await sync_account.delay("a")
    different = await sync_account.delay("b")
    assert first.id == again.id != different.id
    assert await (await app.connected_broker()).queue_length(app.conf.task_default_queue) == 2


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_execute(self, task: Task[Any, Any], request: Any) -> None:
        self.calls.append(f"{self.name}.before")

    async def after_execute(self, task: Task[Any, Any], request: Any, meta: Any) -> None:
        self.calls.append(f"{self.name}.after:{meta.status}")


class Broken(Middleware):
    def before_publish(self, message: Any) -> None:
        raise RuntimeError("middleware bug")


async def test_hooks_and_middleware_run_in_order_and_cannot_change_the_outcome(app: TaskQ) -> None:
    calls: list[str] = []

    class Hooked(Task[Any, Any]):
        async def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(f"on_success:{retval}")

        def on_failure(
            self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: str
        ) -> None:
            calls.append(f"on_failure:{type(exc).__name__}")
            raise RuntimeError("hook bug")

        def after_return(self, status: str, *rest: Any) -> None:
            calls.append(f"after_return:{status}")

    @app.task(base=Hooked)
    async def works() -> int:
        return 7

    @app.task(base=Hooked)
    async def breaks() -> None:
        raise KeyError("k")

    app.middleware.add(Recorder("outer", calls))
    app.middleware.add(Recorder("inner", calls))
    app.middleware.add(Broken())
    async with running_worker(app, concurrency=1):
        assert await (await works.delay()).get(timeout=10) == 7
        with pytest.raises(KeyError):
            await (await breaks.delay()).get(timeout=10)
    assert calls[:6] == [
        "outer.before",
        "inner.before",
        "on_success:7",
        "after_return:SUCCESS",
        "inner.after:SUCCESS",
        "outer.after:SUCCESS",
    ]
    assert "on_failure:KeyError" in calls and "after_return:FAILURE" in calls


async def test_dead_letter_replay_runs_the_task_again_with_retries_reset(app: TaskQ) -> None:
    from taskq import dlq

    healthy = False

    @app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=1, default_retry_delay=0.01)
    async def fragile(self: Task[Any, Any]) -> int:
        if not healthy:
            raise ConnectionError("down")
        return self.request.retries

    async with running_worker(app):
        result = await fragile.delay()
        with pytest.raises(ConnectionError):
            await result.get(timeout=10)
        assert len(await dlq.dead_letters(app, app.conf.task_default_queue, result.id)) == 1
        healthy = True
        assert await dlq.replay(app, app.conf.task_default_queue, result.id) == (1, [])

        async def succeeded() -> bool:
            return await result.status() == states.SUCCESS

        await eventually(succeeded)
        assert await result.get(timeout=1) == 0
    assert await (await app.connected_broker()).dead_letter_length(app.conf.task_default_queue) == 0


async def test_dead_letters_deleted_by_task_id_then_all(app: TaskQ) -> None:
    from taskq import dlq

    @app.task(autoretry_for=(ConnectionError,), max_retries=0)
    async def down() -> None:
        raise ConnectionError("down")

    queue = app.conf.task_default_queue
    broker = await app.connected_broker()
    async with running_worker(app):
        first, second = await down.delay(), await down.delay()
        for result in (first, second):
            with pytest.raises(ConnectionError):
                await result.get(timeout=10)

        async def both_dead_lettered() -> bool:
            return await broker.dead_letter_length(queue) == 2

        await eventually(both_dead_lettered)
    assert await dlq.delete(app, queue, first.id) == 1
    assert [peek_id(letter.body) for letter in await dlq.dead_letters(app, queue)] == [second.id]
    assert await dlq.delete(app, queue) == 1
    assert await broker.dead_letter_length(queue) == 0


async def test_a_delivery_the_worker_cannot_handle_ends_in_the_dead_letters(app: TaskQ) -> None:
    """The chain's next step is too large to publish: the acks_late message is dead-lettered
    with the reason, not left to be delivered (and run) again and again."""
    app.conf.task_max_message_bytes = 4000
    await app.close()  # the limit is the broker's, taken when it connects
    runs: list[str] = []

    @app.task(acks_late=True)
    async def big() -> str:
        runs.append("big")
        return "x" * 5000

    @app.task
    async def size(text: str) -> int:
        return len(text)

    async with running_worker(app):
        result = await (big.s() | size.s()).apply_async()
        broker = await app.connected_broker()
        queue = app.conf.task_default_queue

        async def dead_lettered() -> bool:
            return await broker.dead_letter_length(queue) == 1

        await eventually(dead_lettered)
        assert await result.parent.status() == states.SUCCESS  # type: ignore[union-attr]
    [letter] = await broker.dead_letters(queue)
    assert letter.reason.startswith("could not be handled: MessageTooLargeError: task")
    assert await broker.queue_length(queue) == 0
    assert runs == ["big"]
