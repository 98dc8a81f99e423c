"""Producing from synchronous code (`taskq.sync`) and from a new event loop per call, on the
memory broker, SQLite, Redis and RabbitMQ (one store each: memory, SQLite, Redis, SQLite):
`delay_sync`, `apply_async_sync`, `send_task_sync` and `SyncResult` from plain threads against
an in-process worker, many threads at once over reused connections, a forked child,
`asyncio.run(task.delay())` again and again, and a script that exits cleanly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from servers import RedisServer, redis_command

from taskq import TaskError, TaskQ, states
from taskq.sync import SyncResult
from taskq.task import Task
from taskq.testing import memory_app, running_worker

pytestmark = pytest.mark.integration

on_every_broker = pytest.mark.parametrize(
    "app_settings", ["memory", "sqlite", "redis", "amqp"], indirect=True
)
# A broker another process can reach: not the memory broker, which lives in this one.
on_every_server_broker = pytest.mark.parametrize(
    "app_settings", ["sqlite", "redis", "amqp"], indirect=True
)
THREADS, CALLS_PER_THREAD = 8, 50


def tasks_of(app: TaskQ) -> tuple[Task[[int, int], int], Task[[], None]]:
    @app.task(name="sync.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="sync.fail")
    async def fail() -> None:
        raise ZeroDivisionError("no")

    return add, fail


@pytest.fixture
async def app(app_settings: dict[str, Any]) -> AsyncIterator[TaskQ]:
    app = TaskQ("sync", **app_settings)
    tasks_of(app)
    async with app:
        yield app


async def in_thread(app: TaskQ, work: Callable[[], Any]) -> Any:
    """`work()` in another thread, with a worker for `app` on the test's event loop: the sync
    calls of `work` use the process's background loop beside it."""
    async with running_worker(app):
        return await anyio.to_thread.run_sync(work)


@on_every_broker
async def test_sync_calls_publish_and_results_block_until_known(app: TaskQ) -> None:
    add, fail = app.tasks["sync.add"], app.tasks["sync.fail"]

    def produce() -> dict[str, Any]:
        added: SyncResult[int] = add.delay_sync(4, 5)
        later = add.apply_async_sync(args=[1], kwargs={"y": 2}, countdown=0.5, task_id="later-1")
        by_name = app.send_task_sync("sync.add", args=[10, 20], priority=3)
        failed = fail.delay_sync()
        value = added.get(timeout=20)
        with pytest.raises(TaskError) as caught:
            failed.get(timeout=20)
        return {
            "value": value,
            "status": added.status(),
            "ready": added.ready(),
            "successful": added.successful(),
            "later": later.id,
            "later_value": later.get(timeout=20),
            "by_name": app.SyncResult(by_name.id).get(timeout=20),
            "error": caught.value,
            "failed": (failed.failed(), failed.status(), failed.result()),
            "traceback": failed.traceback() or "",
            "about": (
                added.name(),
                added.args(),
                added.kwargs(),
                added.queue() == app.conf.task_default_queue,
                bool(added.worker()),
                added.retries(),
                added.date_done() is not None,
                added.wait(timeout=20),
                added.info(),
            ),
        }

    seen = await in_thread(app, produce)
    assert (seen["value"], seen["status"], seen["ready"], seen["successful"]) == (
        9,
        states.SUCCESS,
        True,
        True,
    )
    assert (seen["later"], seen["later_value"], seen["by_name"]) == ("later-1", 3, 30)
    assert isinstance(seen["error"], ZeroDivisionError) and "no" in str(seen["error"])
    is_failed, status, error = seen["failed"]
    assert (is_failed, status, type(error)) == (True, states.FAILURE, type(seen["error"]))
    assert "ZeroDivisionError" in seen["traceback"]
    assert seen["about"] == ("sync.add", [4, 5], {}, True, True, 0, True, 9, 9)


@on_every_broker
async def test_many_threads_at_once_get_their_own_results(app: TaskQ) -> None:
    add = app.tasks["sync.add"]
    results: dict[int, list[int]] = {}

    def producer(number: int) -> None:
        calls = [add.delay_sync(number, i) for i in range(CALLS_PER_THREAD)]
        results[number] = [call.get(timeout=60) for call in calls]

    def produce() -> None:
        threads = [threading.Thread(target=producer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    await in_thread(app, produce)
    assert results == {n: [n + i for i in range(CALLS_PER_THREAD)] for n in range(THREADS)}


@pytest.mark.parametrize("app_settings", ["redis"], indirect=True)
async def test_sync_calls_reuse_their_connections(app: TaskQ, redis_server: RedisServer) -> None:
    add = app.tasks["sync.add"]

    def clients() -> int:
        return redis_command(redis_server.port, "CLIENT", "LIST").count(b"\n")

    def produce() -> tuple[int, int]:
        add.delay_sync(0, 0).get(timeout=20)  # connects the background loop, store listener too
        before = clients()
        for i in range(100):
            assert add.delay_sync(i, 1).get(timeout=20) == i + 1
        return before, clients()

    before, after = await in_thread(app, produce)
    # A connection per call would add 100; the in-process worker's own pool may grow by one
    # when its ack, result write and next fetch happen to overlap.
    assert after - before <= 1, (before, after)


@pytest.mark.parametrize("app_settings", ["redis"], indirect=True)
async def test_a_forked_child_publishes_on_a_loop_of_its_own(app: TaskQ) -> None:
    """A pre-forking server forks after the parent has published: the child's calls run on a
    loop thread and connections of its own."""
    add = app.tasks["sync.add"]

    def produce() -> tuple[int, int]:
        parent = add.delay_sync(1, 1).get(timeout=20)
        child = os.fork()
        if child == 0:
            try:
                os._exit(0 if add.delay_sync(2, 2).get(timeout=20) == 4 else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(child, 0)
        return parent, os.waitstatus_to_exitcode(status)

    assert await in_thread(app, produce) == (2, 0)


async def test_sync_calls_inside_an_event_loop_say_what_to_await() -> None:
    app = memory_app()
    add, _ = tasks_of(app)
    with pytest.raises(RuntimeError, match=r"await sync\.add\.delay\(\)` there instead"):
        add.delay_sync(1, 2)
    with pytest.raises(RuntimeError, match=r"await sync\.add\.apply_async\(\)` there instead"):
        add.apply_async_sync(args=[1, 2])
    with pytest.raises(RuntimeError, match=r"await app\.send_task\(\)` there instead"):
        app.send_task_sync("sync.add", args=[1, 2])
    with pytest.raises(RuntimeError, match=r"await AsyncResult\.get\(\)` there instead"):
        app.SyncResult("some-id").get(timeout=1)
    broker = await app.connected_broker()
    assert await broker.queue_length(app.conf.task_default_queue) == 0


def test_bad_options_of_a_sync_call_are_refused(tmp_path: Path) -> None:
    app = TaskQ("sync", broker=f"sqlite:///{tmp_path}/taskq.db")
    add, _ = tasks_of(app)
    with pytest.raises(TypeError, match="countdwn"):
        add.apply_async_sync(args=[1, 2], countdwn=5)  # type: ignore[call-arg]


@on_every_broker
def test_a_new_event_loop_per_call_reconnects(app_settings: dict[str, Any]) -> None:
    """`asyncio.run(add.delay(...))` in a loop: each call connects on its own loop (the last
    one's connections closed with it), and a worker on yet another loop runs them all."""
    app = TaskQ("sync", **app_settings)
    add, _ = tasks_of(app)
    ids = []
    for i in range(5):
        started = time.monotonic()
        ids.append(asyncio.run(add.delay(i, i)).id)
        assert time.monotonic() - started < 5, "a publish on a new loop hung"

    async def run_them() -> list[int]:
        async with app, running_worker(app):
            return [await app.AsyncResult(task_id).get(timeout=20) for task_id in ids]

    assert asyncio.run(run_them()) == [0, 2, 4, 6, 8]


SCRIPT = """
import os
from taskq import TaskQ

app = TaskQ("script", broker=os.environ["BROKER"], backend=os.environ.get("BACKEND") or None,
            task_default_queue=os.environ["QUEUE"])

@app.task(name="sync.add")
async def add(x: int, y: int) -> int:
    return x + y

print(add.delay_sync(2, 3).get(timeout=20))
"""


@on_every_server_broker
async def test_a_script_producing_synchronously_exits_cleanly(
    app: TaskQ, app_settings: dict[str, Any]
) -> None:
    """At interpreter exit the background loop closes its connections: nothing left open,
    nothing pending, no warning."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
    env |= {"BROKER": app.broker_url, "BACKEND": app_settings.get("backend") or ""}
    env["QUEUE"] = app.conf.task_default_queue
    argv = [sys.executable, "-W", "default", "-c", textwrap.dedent(SCRIPT)]

    def run_script() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    done = await in_thread(app, run_script)
    assert (done.returncode, done.stdout, done.stderr) == (0, "5\n", "")
