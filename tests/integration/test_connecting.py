"""Connecting to Redis and RabbitMQ, as the real `taskq` command shows it: a refused login or
vhost is one line and exit status 2, with no retries."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import LOOPBACK, RabbitMQServer, RedisServer
from support import INTEGRATION

pytestmark = pytest.mark.integration

PASSWORD = "s3cret"


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
