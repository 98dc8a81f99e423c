"""Connecting to Redis and RabbitMQ, as the real `taskq` command shows it: a worker or beat
started before its broker retries with backoff, one log line per attempt, and then works; out
of retries (or with none) it exits 1 with one line; a refused login or vhost is one line and
exit status 2, with no retries. A producer's publish with the broker down raises
`BrokerUnavailable` after `publish_timeout`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from servers import LOOPBACK, RabbitMQServer, RedisServer, free_ports
from support import INTEGRATION, TaskqProcess, wait_for

from taskq import BrokerUnavailable, TaskQ, chain, signature

pytestmark = pytest.mark.integration

PASSWORD = "s3cret"
BROKERS = ["redis", "amqp"]
# What `taskq.startup` logs for each failed attempt, and the last line of a worker that gives up.
UNREACHABLE = r"(Redis|RabbitMQ) at \S+ is unreachable: .+"
RETRY_LINE = re.compile(rf"WARNING taskq\.startup\] {UNREACHABLE} \(retry \d+/100 in [\d.]+ s\)")
Server = RedisServer | RabbitMQServer


def taskq(env: dict[str, str], broker_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`taskq ARGS -A itest_tasks:app` on `broker_url`, run to its end; stderr in stdout."""
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args, "-A", "itest_tasks:app"],
        env={**env, "TASKQ_BROKER_URL": broker_url},
        cwd=INTEGRATION,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def redis_with_password(
    start_server: Callable[[RedisServer], RedisServer], tmp_path: Path
) -> RedisServer:
    return start_server(RedisServer(tmp_path / "redis", password=PASSWORD))


@pytest.mark.parametrize(
    ("login", "error"),
    [
        ("", "Redis requires a password: put it in the URL (redis://:password@host:port/db)"),
        (":wrong@", "Redis refused the login for user 'default'"),
        ("bob:wrong@", "Redis refused the login for user 'bob'"),  # Redis has no 'bob' either
    ],
)
def test_a_redis_login_refused_is_one_line_and_exit_2(
    redis_with_password: RedisServer, worker_env: dict[str, str], login: str, error: str
) -> None:
    url = f"redis://{login}{LOOPBACK}:{redis_with_password.port}/0"
    refused = taskq(worker_env, url, "worker")
    assert (refused.returncode, refused.stdout.splitlines()) == (2, [f"Error: {error}"])
    assert taskq(worker_env, redis_with_password.url, "status").returncode == 0


def test_a_rabbitmq_login_refused_is_one_line_and_exit_2(
    rabbitmq_server: RabbitMQServer, worker_env: dict[str, str]
) -> None:
    url = f"amqp://guest:wrong@{LOOPBACK}:{rabbitmq_server.port}/"
    refused = taskq(worker_env, url, "worker")
    assert refused.stdout.splitlines() == ["Error: RabbitMQ refused the login for user 'guest'"]
    assert refused.returncode == 2


def test_a_missing_rabbitmq_vhost_is_one_line_and_exit_2(
    rabbitmq_server: RabbitMQServer, worker_env: dict[str, str]
) -> None:
    vhost = f"/missing-{uuid.uuid4().hex[:8]}"
    url = f"amqp://guest:guest@{LOOPBACK}:{rabbitmq_server.port}/{vhost.replace('/', '%2F')}"
    refused = taskq(worker_env, url, "beat")
    assert refused.stdout.splitlines() == [
        f"Error: RabbitMQ would not open vhost {vhost!r} for user 'guest': it does not exist, "
        "or the user has no permissions on it"
    ]
    assert refused.returncode == 2


def dead_url(kind: str) -> str:
    """A URL of `kind` on a loopback port where nothing listens."""
    [port] = free_ports(1)
    if kind == "redis":
        return f"redis://{LOOPBACK}:{port}/0"
    return f"amqp://guest:guest@{LOOPBACK}:{port}/"


@pytest.fixture(params=BROKERS)
def private_server(
    request: pytest.FixtureRequest, start_server: Callable[[Server], Server], tmp_path: Path
) -> Server:
    """A server of the test's own, which it may stop and start again on the same port."""
    server: Server = (
        RedisServer(tmp_path / "redis")
        if request.param == "redis"
        else RabbitMQServer(tmp_path / "rabbitmq")
    )
    return start_server(server)


@pytest.fixture
def stopped_server(private_server: Server) -> Server:
    """A private server stopped after its first start: its port is known, nothing listens."""
    private_server.stop()
    return private_server


def results_url(server: Server, tmp_path: Path) -> str:
    """The result store: the Redis itself, or SQLite beside RabbitMQ."""
    return server.url if isinstance(server, RedisServer) else f"sqlite:///{tmp_path}/results.db"


async def test_a_worker_started_before_its_broker_waits_for_it_then_works(
    stopped_server: Server, worker_env: dict[str, str], tmp_path: Path
) -> None:
    results = results_url(stopped_server, tmp_path)
    env = {**worker_env, "TASKQ_BROKER_URL": stopped_server.url, "TASKQ_RESULT_BACKEND": results}
    worker = TaskqProcess(env, tmp_path / "worker.log", ["worker"], ready_text="(retry 1/100")
    try:
        stopped_server.start()
        wait_for(lambda: " ready: " in worker.output(), timeout=60)
        async with TaskQ("producer", broker=stopped_server.url, backend=results) as producer:
            result = await producer.send_task("itest.add", args=[2, 3])
            assert await result.get(timeout=30) == 5
    finally:
        worker.stop()
    before_ready = worker.output().split(" ready: ")[0].splitlines()[:-1]
    assert before_ready and all(RETRY_LINE.search(line) for line in before_ready), before_ready
    assert "guest:guest" not in worker.output()  # the password is masked


@pytest.mark.parametrize("kind", BROKERS)
@pytest.mark.parametrize("command", ["worker", "beat"])
def test_out_of_retries_a_worker_or_beat_exits_1_with_one_line(
    worker_env: dict[str, str], kind: str, command: str
) -> None:
    env = {**worker_env, "TASKQ_BROKER_CONNECTION_MAX_RETRIES": "2"}
    done = taskq(env, dead_url(kind), command)
    *retries, error = done.stdout.splitlines()
    assert [line.rpartition(" (")[2] for line in retries] == [
        "retry 1/2 in 0.5 s)",
        "retry 2/2 in 1 s)",
    ]
    assert re.fullmatch(rf"Error: {UNREACHABLE} \(gave up after 2 retries\)", error), error
    assert done.returncode == 1


@pytest.mark.parametrize("kind", BROKERS)
def test_without_retries_a_worker_exits_1_with_one_line_at_once(
    worker_env: dict[str, str], kind: str
) -> None:
    env = {**worker_env, "TASKQ_BROKER_CONNECTION_RETRY_ON_STARTUP": "false"}
    done = taskq(env, dead_url(kind), "worker")
    [error] = done.stdout.splitlines()
    assert re.fullmatch(f"Error: {UNREACHABLE}", error) and "retry" not in error, error
    assert "connection refused" in error.lower()  # the cause, not a frame dump
    assert done.returncode == 1


async def test_a_publish_with_the_broker_down_raises_broker_unavailable_after_publish_timeout(
    private_server: Server, tmp_path: Path
) -> None:
    results = results_url(private_server, tmp_path)
    app = TaskQ("producer", broker=private_server.url, backend=results, broker_publish_timeout=1)
    add = "itest.add"
    async with app:
        await app.send_task(add, args=[1, 1])  # connected while the broker is up
        private_server.stop()
        with pytest.raises(BrokerUnavailable):  # RabbitMQ's reset link fails the first at once
            await app.send_task(add, args=[1, 2])
        calls = {  # a call's own timeout, a workflow's own, the app's
            0.5: lambda: app.send_task(add, args=[1, 3], publish_timeout=0.5),
            0.3: lambda: chain(
                signature(add, [1, 4], app=app), signature(add, [5], app=app)
            ).apply_async(publish_timeout=0.3),
            1.0: lambda: app.send_task(add, args=[1, 5]),
        }
        for timeout, call in calls.items():
            started = time.monotonic()
            with pytest.raises(
                BrokerUnavailable, match=rf"within publish_timeout \({timeout:g} s\)"
            ):
                await call()
            assert timeout <= time.monotonic() - started < timeout + 1.5


@pytest.mark.parametrize("kind", BROKERS)
async def test_concurrent_first_calls_of_a_producer_whose_broker_is_down_all_fail_clearly(
    kind: str, tmp_path: Path
) -> None:
    app = TaskQ("producer", broker=dead_url(kind), backend=f"sqlite:///{tmp_path}/results.db")
    errors: list[str] = []

    async def call() -> None:
        with pytest.raises(BrokerUnavailable) as raised:
            await app.send_task("itest.add", args=[1, 1])
        errors.append(str(raised.value))

    async with anyio.create_task_group() as calls:
        for _ in range(3):
            calls.start_soon(call)
    assert len(errors) == 3 and all(re.fullmatch(UNREACHABLE, error) for error in errors), errors
