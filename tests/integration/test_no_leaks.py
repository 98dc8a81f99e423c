"""A URL's password never shows: not in an error (a bad URL, a cluster URL with a database,
an unreachable server), not in a log line (the worker's banner, its startup retries, a client
library's own message), not in `taskq status` or `taskq inspect stats|conf`; the signing key
neither. And a worker accepting pickle says at start what that risks."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import LOOPBACK, RedisServer, free_ports
from support import INTEGRATION, WorkerProcess

from taskq import TaskQ
from taskq.errors import ConfigurationError
from taskq.logs import JsonFormatter, MaskingFormatter

pytestmark = pytest.mark.integration

PASSWORD = "Sekr3t-" + uuid.uuid4().hex
SIGNING_KEY = "signing-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-password"), password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue() -> str:
    return f"leaks-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(worker_env: dict[str, str], redis_with_password: RedisServer, queue: str) -> dict[str, str]:
    url = f"{redis_with_password.url}?prefix=t{uuid.uuid4().hex[:8]}:"
    return {
        **worker_env,
        "TASKQ_BROKER_URL": url,
        "TASKQ_TASK_DEFAULT_QUEUE": queue,
        "TASKQ_MESSAGE_SIGNING_KEY": SIGNING_KEY,
    }


def taskq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args, "-A", "itest_tasks:app"],
        env=env,
        cwd=INTEGRATION,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def shown(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            f"redis://:{PASSWORD}@{LOOPBACK}:6379/3?cluster=true",
            "Redis Cluster has only database 0",
        ),
        (f"redis+tls://:{PASSWORD}@{LOOPBACK}:6379/0", "unsupported broker URL 'redis+tls://:***@"),
        (f"redis://:{PASSWORD}@{LOOPBACK}:{{port}}/0", "is unreachable"),
        (f"amqp://user:{PASSWORD}@{LOOPBACK}:{{port}}/", "is unreachable"),
    ],
)
def test_a_failing_command_prints_one_line_with_the_password_masked(
    env: dict[str, str], url: str, error: str
) -> None:
    closed = free_ports(1)[0]
    given = {**env, "TASKQ_BROKER_URL": url.format(port=closed)}
    done = taskq({**given, "TASKQ_BROKER_TRANSPORT_OPTIONS": "{}"}, "status")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and error in lines[0] and ":***@" in lines[0], done.stderr
    assert PASSWORD not in shown(done)


def test_startup_retries_log_the_url_masked(env: dict[str, str], tmp_path: Path) -> None:
    closed = free_ports(1)[0]
    given = {
        **env,
        "TASKQ_BROKER_URL": f"redis://:{PASSWORD}@{LOOPBACK}:{closed}/0",
        "TASKQ_BROKER_CONNECTION_MAX_RETRIES": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "worker", "-A", "itest_tasks:app"],
        env=given,
        cwd=INTEGRATION,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "retry 1/1" in done.stderr and ":***@" in done.stderr, done.stderr
    assert PASSWORD not in shown(done)


def test_banner_status_and_inspect_never_show_a_secret(env: dict[str, str], tmp_path: Path) -> None:
    worker = WorkerProcess(
        {**env, "TASKQ_ACCEPT_CONTENT": "json,pickle"}, tmp_path / "worker.log", ["-c", "2"]
    )
    try:
        assert f"broker redis://:***@{LOOPBACK}" in worker.output()
        assert "accept_content includes 'pickle'" in worker.output()
        outputs = [
            taskq(env, "status"),
            taskq(env, "inspect", "stats"),
            taskq(env, "inspect", "conf"),
        ]
        for done in outputs:
            assert done.returncode == 0, shown(done)
        stats, conf = outputs[1].stdout, outputs[2].stdout
        assert ":***@" in stats and ":***@" in conf
        assert "message_signing_key" in conf and "***" in conf
        for text in [worker.output(), *map(shown, outputs)]:
            assert PASSWORD not in text and SIGNING_KEY not in text
    finally:
        worker.stop()
    assert PASSWORD not in worker.output()


def test_a_worker_accepting_json_only_gives_no_pickle_warning(
    env: dict[str, str], tmp_path: Path
) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log", [])
    worker.stop()
    assert "ready" in worker.output() and "pickle" not in worker.output()


def test_the_app_repr_and_a_library_log_line_are_masked() -> None:
    app = TaskQ("t", broker=f"redis://:{PASSWORD}@{LOOPBACK}:6379/0")
    assert PASSWORD not in repr(app) and ":***@" in repr(app)
    record = logging.LogRecord(
        "redis.client", logging.ERROR, __file__, 1, "gave up on %s", (app.broker_url,), None
    )
    for formatter in (MaskingFormatter(), JsonFormatter("w1")):
        line = formatter.format(record)
        assert PASSWORD not in line and ":***@" in line


async def test_a_bad_url_in_code_is_an_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError, match="unsupported broker URL") as raised:
        await TaskQ("t", broker=f"redis+tls://:{PASSWORD}@{LOOPBACK}/0").connect()
    assert PASSWORD not in str(raised.value)
