"""Worker presence and remote control (`app.control`, `taskq inspect`) on every broker: two
`taskq worker` processes (SQLite, Redis, RabbitMQ) or two in-process workers (memory), one
of them slow to answer on demand (itest_tasks' `nap` command)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from itest_tasks import add, concurrent, nap
from support import INTEGRATION, WorkerProcess, eventually

from taskq import TaskError, TaskQ, signature
from taskq.errors import ConfigurationError
from taskq.testing import memory_app, running_worker

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
FAST, SLOW = "fast@test", "slow@test"
HEARTBEAT = 0.2
ON_SQLITE = pytest.mark.parametrize("broker_url", ["sqlite"], indirect=True)  # broker-agnostic


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_server").url
        return f"{url}?prefix=t{uuid.uuid4().hex[:12]}:"
    if request.param == "amqp":
        amqp: str = request.getfixturevalue("rabbitmq_server").url
        return amqp
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.fixture
def backend_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/results.db"


@pytest.fixture
def worker_env(worker_env: dict[str, str], backend_url: str) -> dict[str, str]:
    return {
        **worker_env,
        "TASKQ_RESULT_BACKEND": backend_url,
        "TASKQ_WORKER_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        # a queue of the test's own: the RabbitMQ and Redis servers are shared
        "TASKQ_TASK_DEFAULT_QUEUE": f"q-{uuid.uuid4().hex[:12]}",
    }


@pytest.fixture
async def client(
    broker_url: str, backend_url: str, worker_env: dict[str, str]
) -> AsyncIterator[TaskQ]:
    app = TaskQ(
        "client",
        broker=broker_url,
        backend=backend_url,
        task_default_queue=worker_env["TASKQ_TASK_DEFAULT_QUEUE"],
        broker_transport_options={"polling_interval": 0.05},
    )
    async with app:
        yield app


async def both_known(client: TaskQ) -> None:
    """Until both workers answer a ping and each is known to be online."""

    async def known() -> bool:
        replies = await client.control.ping(timeout=2)
        online = {name for name, presence in replies.workers.items() if presence.online}
        return set(replies.answers) == online == {FAST, SLOW}

    await eventually(known)


async def check_round_trips(client: TaskQ) -> None:
    """What two workers, FAST and SLOW, answer: the slow one is waited for until every known
    worker answered, and named when it is too slow; a destination asks one worker only."""
    await both_known(client)
    started = time.monotonic()
    replies = await client.control.broadcast("nap", {"seconds": {SLOW: 0.5}}, timeout=10)
    assert replies is not None
    assert replies.answers == {FAST: FAST, SLOW: SLOW}
    assert 0.5 <= time.monotonic() - started < 5  # it did not wait for the timeout

    replies = await client.control.broadcast("nap", {"seconds": {SLOW: 10}}, timeout=1.5)
    assert replies is not None
    assert replies.answers == {FAST: FAST}
    assert replies.missing == [SLOW]

    stats = await client.control.inspect(destination=FAST).stats()
    assert set(stats.answers) == {FAST}
    assert stats.answers[FAST]["concurrency"] == 4

    registered = await client.control.inspect().registered()
    assert "itest.add" in registered.answers[FAST]
    assert "itest.add" in registered.answers[SLOW]

    running = await client.send_task("itest.concurrent", args=[30])

    async def active_somewhere() -> bool:
        active = await client.control.inspect().active()
        tasks = [task for tasks in active.answers.values() for task in tasks]
        return [(t["id"], t["name"], t["args"]) for t in tasks] == [
            (running.id, "itest.concurrent", [30])
        ]

    await eventually(active_somewhere)
    revoked = await client.control.revoke(running.id, terminate=True, reply=True)
    assert revoked is not None
    assert revoked.answers == {FAST: [running.id], SLOW: [running.id]}

    async def revoked_state() -> bool:
        return await running.status() == "REVOKED"

    await eventually(revoked_state)
    held_revoked = await client.control.inspect().revoked()
    assert held_revoked.answers == {FAST: [running.id], SLOW: [running.id]}

    queues = await client.control.inspect().active_queues()
    queue = client.conf.task_default_queue
    assert queues.answers == {FAST: [{"name": queue}], SLOW: [{"name": queue}]}
    settings = await client.control.inspect(destination=[SLOW]).conf()
    assert settings.answers[SLOW]["worker_heartbeat_interval"] == HEARTBEAT
    assert settings.answers[SLOW]["task_default_queue"] == queue


async def test_inspect_and_control_round_trips(client: TaskQ, start_worker: StartWorker) -> None:
    start_worker("-n", FAST, "-c", "4")
    start_worker("-n", SLOW, "-c", "4")
    await check_round_trips(client)


async def test_inspect_and_control_round_trips_in_memory() -> None:
    app = memory_app(worker_heartbeat_interval=HEARTBEAT)
    app.control.command(nap)
    app.task(name="itest.add")(add.fn)
    app.task(name="itest.concurrent")(concurrent.fn)
    async with (
        running_worker(app, hostname=FAST, concurrency=4),
        running_worker(app, hostname=SLOW, concurrency=4),
    ):
        await check_round_trips(app)


async def test_reserved_and_scheduled_messages(
    app_settings: dict[str, Any],
) -> None:
    app = TaskQ("reserved", **app_settings)
    app.task(name="itest.concurrent")(concurrent.fn)
    async with app, running_worker(app, concurrency=1, prefetch_multiplier=3) as worker:
        sent = [await app.send_task("itest.concurrent", args=[30]) for _ in range(3)]

        async def one_running_two_reserved() -> bool:
            inspect = app.control.inspect()
            active, reserved = await inspect.active(), await inspect.reserved()
            running = {task["id"] for task in active.answers[worker.hostname]}
            waiting = {task["id"] for task in reserved.answers[worker.hostname]}
            return len(running) == 1 and running | waiting == {result.id for result in sent}

        await eventually(one_running_two_reserved)
        await app.control.revoke([result.id for result in sent], terminate=True)

        due_at = time.time() + 60
        later = await app.send_task("itest.concurrent", args=[1], eta=due_at)
        scheduled = await app.control.inspect().scheduled()
        if app_settings["broker"].startswith("amqp"):
            assert scheduled.errors[worker.hostname].startswith("UnsupportedError: RabbitMQ")
            return
        [message] = scheduled.answers[worker.hostname]
        assert (message["id"], message["args"]) == (later.id, [1])
        assert message["due_at"] == pytest.approx(due_at, abs=0.01)


async def test_add_and_cancel_consumer(app_settings: dict[str, Any]) -> None:
    """A queue added is consumed at once; a task running across the change still finishes;
    a queue cancelled is left alone."""
    app = TaskQ("consumers", **app_settings)
    app.task(name="itest.concurrent")(concurrent.fn)
    extra = f"{app.conf.task_default_queue}-extra"
    async with app, running_worker(app, hostname=FAST) as worker:
        running = await app.send_task("itest.concurrent", args=[0.5])
        waiting = await app.send_task("itest.concurrent", args=[0], queue=extra)
        added = await app.control.add_consumer(extra)
        assert added is not None
        assert added.answers == {FAST: [app.conf.task_default_queue, extra]}
        await waiting.get(timeout=20)  # it ran
        await running.get(timeout=20)  # and the one held across the change was settled

        cancelled = await app.control.cancel_consumer(extra)
        assert cancelled is not None and cancelled.answers == {FAST: [app.conf.task_default_queue]}
        left = await app.send_task("itest.concurrent", args=[0], queue=extra)
        done = await app.send_task("itest.concurrent", args=[0])
        await done.get(timeout=20)
        assert await left.status() == "PENDING"
        assert worker.queues == [app.conf.task_default_queue]

        refused = await app.control.cancel_consumer(app.conf.task_default_queue)
        assert refused is not None
        assert refused.errors == {
            FAST: f"ValueError: {app.conf.task_default_queue!r} is the only queue consumed;"
            " shutdown stops the worker"
        }


@ON_SQLITE
async def test_a_broadcast_task_runs_once_on_every_worker_of_its_queue(
    client: TaskQ, start_worker: StartWorker, tmp_path: Path
) -> None:
    fast, slow = start_worker("-n", FAST), start_worker("-n", SLOW)
    elsewhere = start_worker("-n", "elsewhere@test", "-Q", "other")

    async def all_known() -> bool:
        replies = await client.control.ping(timeout=2)
        return set(replies.answers) == {FAST, SLOW, "elsewhere@test"}

    await eventually(all_known)
    ran = tmp_path / "ran"
    ran.mkdir()
    await client.send_task("itest.touch", args=[str(ran)], broadcast=True)

    async def ran_once_on_each() -> bool:  # a file may show up before its line is written
        lines = {path.name: path.read_text() for path in ran.iterdir()}
        return lines == {str(fast.pid): "ran\n", str(slow.pid): "ran\n"}

    await eventually(ran_once_on_each)
    # The worker of another queue heard it before this question, and took nothing.
    inspect = client.control.inspect(destination="elsewhere@test")
    assert (await inspect.stats()).answers["elsewhere@test"]["processed"] == 0
    assert (await inspect.reserved()).answers["elsewhere@test"] == []
    assert str(elsewhere.pid) not in {path.name for path in ran.iterdir()}


async def test_a_broadcast_task_is_not_delayed_nor_linked() -> None:
    app = memory_app()
    async with app:
        with pytest.raises(ValueError, match="no an eta or countdown, an idempotency_key"):
            await app.send_task("t", broadcast=True, countdown=5, idempotency_key="k")
        with pytest.raises(TypeError, match="broadcast: an option of the call that publishes"):
            signature("t", app=app).set(broadcast=True)


def taskq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "taskq", *args, "-A", "itest_tasks:app"]
    return subprocess.run(
        argv, env=env, cwd=INTEGRATION, capture_output=True, text=True, timeout=60
    )


@ON_SQLITE
async def test_inspect_ping_is_a_probe(
    client: TaskQ, start_worker: StartWorker, worker_env: dict[str, str]
) -> None:
    """`taskq inspect ping` exits 0 when the named (or every known) worker answers, else 1
    with who did not; `--json` prints the replies."""
    start_worker("-n", FAST)
    start_worker("-n", SLOW)
    await both_known(client)
    named = taskq(worker_env, "inspect", "ping", "-d", FAST)
    assert (named.returncode, named.stdout) == (0, f"-> {FAST}: pong\n")
    nobody = taskq(worker_env, "inspect", "ping", "-d", "nobody@test", "--timeout", "0.3")
    assert nobody.returncode == 1
    assert nobody.stderr == "Error: no answer within 0.3 s from: nobody@test\n"
    stats = taskq(worker_env, "inspect", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert set(orjson.loads(stats.stdout)["answers"]) == {FAST, SLOW}
    typo = taskq(worker_env, "inspect", "pnig")
    assert typo.returncode == 1
    assert "unknown inspect command 'pnig' (did you mean 'ping'?)" in typo.stderr


async def test_a_killed_worker_is_shown_offline(
    client: TaskQ, start_worker: StartWorker, worker_env: dict[str, str]
) -> None:
    """Its heartbeats stop: after three missed beats the other worker knows it offline, a
    command no longer waits for it, and `taskq status` shows it so."""
    start_worker("-n", FAST)
    slow = start_worker("-n", SLOW)
    await both_known(client)
    slow.signal(signal.SIGKILL)
    slow.wait()

    async def offline() -> bool:
        replies = await client.control.ping()
        return replies.answers == {FAST: "pong"} and not replies.workers[SLOW].online

    await eventually(offline)
    replies = await client.control.ping()
    assert replies.missing == []

    await client.send_task("itest.add", args=[1, 2], countdown=60)
    env = {**worker_env, "TASKQ_TASK_ROUTES": '{"itest.add": {"queue": "adds"}}'}
    shown = taskq(env, "status")
    assert shown.returncode == 0, shown.stderr
    workers, queues = shown.stdout.split("\n\n")
    header, fast, slow = workers.splitlines()
    assert header.split() == ["worker", "state", "queues", "active", "last", "heartbeat"]
    queue = client.conf.task_default_queue
    assert fast.split()[:4] == [FAST, "online", queue, "0"]
    assert slow.split()[:4] == [SLOW, "offline", queue, "0"]
    assert [line.split() for line in queues.splitlines()] == [
        ["queue", "messages", "delayed", "dead", "letters"],
        *sorted([["adds", "0", "0", "0"], [queue, "1", "1", "0"]]),
    ]


@ON_SQLITE
async def test_pool_grow_raises_the_tasks_run_at_once(
    client: TaskQ, start_worker: StartWorker
) -> None:
    start_worker("-n", FAST, "-c", "2", "--prefetch-multiplier", "4")

    async def peak() -> int:
        results = [await client.send_task("itest.concurrent", args=[0.5]) for _ in range(8)]
        return max([await result.get(timeout=20) for result in results])

    assert await peak() == 2
    grown = await client.control.pool_grow(2)
    assert grown is not None and grown.answers == {FAST: {"concurrency": 4}}
    assert await peak() == 4
    too_far = await client.control.pool_grow(5)
    assert too_far is not None
    assert too_far.errors == {
        FAST: "ValueError: concurrency 9 would exceed the prefetch (8) this worker started"
        " with; restart it with a higher --prefetch-multiplier"
    }
    shrunk = await client.control.pool_shrink(3)
    assert shrunk is not None and shrunk.answers == {FAST: {"concurrency": 1}}
    stats = await client.control.inspect().stats()
    assert stats.answers[FAST]["concurrency"] == 1


@ON_SQLITE
async def test_rate_limit_and_time_limit_changed_at_runtime(
    client: TaskQ, start_worker: StartWorker
) -> None:
    start_worker("-n", FAST)

    async def spread() -> float:
        results = [await client.send_task("itest.ran_at") for _ in range(5)]
        starts = [await result.get(timeout=20) for result in results]
        return max(starts) - min(starts)

    assert await spread() < 1.0
    limited = await client.control.rate_limit("itest.ran_at", "2/s")
    assert limited is not None
    assert limited.answers == {FAST: {"task": "itest.ran_at", "rate_limit": "2/s"}}
    assert await spread() >= 1.9  # one start per 0.5 s
    await client.control.rate_limit("itest.ran_at", None)
    assert await spread() < 1.0

    unknown = await client.control.rate_limit("itest.nope", "5/s")
    assert unknown is not None
    assert unknown.errors == {FAST: "LookupError: no task 'itest.nope' is registered here"}
    with pytest.raises(ConfigurationError, match="bad rate_limit 'fast'"):
        await client.control.rate_limit("itest.ran_at", "fast")

    await client.control.time_limit("itest.concurrent", hard=0.2)
    with pytest.raises(TaskError, match="TimeLimitExceeded"):
        await (await client.send_task("itest.concurrent", args=[5])).get(timeout=20)


@ON_SQLITE
async def test_shutdown_stops_the_named_worker_warmly(
    client: TaskQ, start_worker: StartWorker
) -> None:
    start_worker("-n", FAST)
    slow = start_worker("-n", SLOW)
    await both_known(client)
    stopped = await client.control.shutdown(destination=SLOW)
    assert stopped is not None and stopped.answers == {SLOW: "shutting down"}
    assert slow.wait() == 0
    replies = await client.control.ping()  # it said goodbye: nobody waits for it
    assert replies.answers == {FAST: "pong"}
    assert not replies.workers[SLOW].online


@ON_SQLITE
async def test_taskq_control(
    client: TaskQ, start_worker: StartWorker, worker_env: dict[str, str]
) -> None:
    start_worker("-n", FAST)
    start_worker("-n", SLOW)
    await both_known(client)
    limited = taskq(worker_env, "control", "rate_limit", "itest.add", "10/m", "-d", FAST, "--json")
    assert limited.returncode == 0, limited.stderr
    answers = orjson.loads(limited.stdout)["answers"]
    assert answers == {FAST: {"task": "itest.add", "rate_limit": "10/m"}}
    revoked = taskq(worker_env, "control", "revoke", "id-1", "id-2", "--terminate", "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert orjson.loads(revoked.stdout)["answers"] == {
        FAST: ["id-1", "id-2"],
        SLOW: ["id-1", "id-2"],
    }
    napped = taskq(worker_env, "control", "nap", "--arguments", '{"seconds": {}}')
    assert (napped.returncode, napped.stdout) == (0, f"-> {FAST}: {FAST}\n-> {SLOW}: {SLOW}\n")
    for args, error in [
        (["pool_grow", "two"], "Error: pool_grow: takes [N]\n"),
        (["add_consumer"], "Error: add_consumer: takes QUEUE\n"),
        (
            ["rate_limit", "itest.add"],
            "Error: rate_limit: takes TASK RATE (e.g. 10/s; none: no limit)\n",
        ),
        (["shutdown", "--terminate"], "Error: shutdown: takes no arguments\n"),
        (["nap", "x"], "Error: nap: give its arguments as --arguments '{...}'\n"),
    ]:
        wrong = taskq(worker_env, "control", *args)
        assert (wrong.returncode, wrong.stderr) == (1, error)
    unknown = taskq(worker_env, "control", "nope", "-d", FAST)
    assert unknown.returncode == 1
    assert unknown.stdout == f"-> {FAST}: error: LookupError: unknown control command 'nope'\n"
