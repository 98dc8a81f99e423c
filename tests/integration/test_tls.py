"""TLS and least privilege against real servers (tests/tls_servers.py: a throwaway CA, a
redis-server listening on its TLS port only, a RabbitMQ node with a TLS listener; both ask
for the client's certificate). A round trip through a `taskq worker` over TLS, the options in
the URL or in `broker_use_ssl`; a client that does not trust the CA, one without a client
certificate and a plaintext client each get one line; a Redis ACL user and a RabbitMQ user of
one vhost, with only the permissions a worker needs, work; wrong credentials are one line."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.exceptions import NoPermissionError
from servers import LOOPBACK, ServerNotInstalled
from support import INTEGRATION, WorkerProcess, in_ci
from tls_servers import Certificates, TLSRabbitMQServer, TLSRedisServer, make_certificates

from taskq import TaskQ

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _installed(start: Callable[[], T]) -> T:
    """`start()`, as tests/conftest.py starts servers: a missing binary (openssl,
    redis-server, rabbitmq-server) fails in CI and skips elsewhere."""
    try:
        return start()
    except ServerNotInstalled as exc:
        missing = str(exc)
    if in_ci():
        pytest.fail(f"{missing}: CI must provide it (run `make services`)", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return _installed(lambda: make_certificates(tmp_path_factory.mktemp("certificates")))


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[TLSRedisServer]:
    server = TLSRedisServer(tmp_path_factory.mktemp("tls-redis"), certificates)
    _installed(server.start)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[TLSRabbitMQServer]:
    server = TLSRabbitMQServer(tmp_path_factory.mktemp("tls-rabbitmq"), certificates)
    _installed(server.start)
    yield server
    server.stop()


def redis_ssl(certificates: Certificates, ca: Path | None = None) -> dict[str, str]:
    """broker_use_ssl for Redis, Celery's names."""
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(ca or certificates.ca),
        "ssl_certfile": str(certificates.client_cert),
        "ssl_keyfile": str(certificates.client_key),
    }


def amqp_ssl(certificates: Certificates, ca: Path | None = None) -> dict[str, str]:
    """broker_use_ssl for RabbitMQ, Celery's (py-amqp's) names."""
    return {
        "ca_certs": str(ca or certificates.ca),
        "certfile": str(certificates.client_cert),
        "keyfile": str(certificates.client_key),
    }


def environment(worker_env: dict[str, str], url: str, **settings: Any) -> dict[str, str]:
    env = {**worker_env, "TASKQ_BROKER_URL": url, "TASKQ_BROKER_TRANSPORT_OPTIONS": "{}"}
    env.update(
        {
            f"TASKQ_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
            for name, value in settings.items()
        }
    )
    return env


def one_line_failure(env: dict[str, str]) -> str:
    """What `taskq status` prints when it cannot connect: one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "status", "-A", "itest_tasks:app"],
        env=env,
        cwd=INTEGRATION,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    return lines[0]


async def round_trip(
    worker_env: dict[str, str], log: Path, url: str, queue: str, **settings: Any
) -> None:
    """A `taskq worker` with these settings runs a task a producer with them sends."""
    env = environment(worker_env, url, **settings, task_default_queue=queue)
    worker = WorkerProcess(env, log, ["-c", "2"])
    try:
        async with TaskQ("producer", broker=url, task_default_queue=queue, **settings) as app:
            assert await (await app.send_task("itest.add", args=[2, 3])).get(timeout=20) == 5
    finally:
        worker.stop()


async def test_redis_over_tls_options_in_the_url_or_in_broker_use_ssl(
    tls_redis: TLSRedisServer,
    certificates: Certificates,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    in_url = tls_redis.tls_url(
        ssl_ca_certs=str(certificates.ca),
        ssl_certfile=str(certificates.client_cert),
        ssl_keyfile=str(certificates.client_key),
        prefix=prefix,
    )
    await round_trip(worker_env, tmp_path / "url.log", in_url, "tls-url")
    given = tls_redis.tls_url(prefix=prefix)
    ssl = redis_ssl(certificates)
    await round_trip(worker_env, tmp_path / "ssl.log", given, "tls-ssl", broker_use_ssl=ssl)


def test_redis_refuses_an_untrusted_server_a_client_without_certificate_and_plaintext(
    tls_redis: TLSRedisServer, certificates: Certificates, worker_env: dict[str, str]
) -> None:
    untrusted = redis_ssl(certificates, ca=certificates.untrusted_ca)
    line = one_line_failure(environment(worker_env, tls_redis.tls_url(), broker_use_ssl=untrusted))
    assert "certificate verify failed: self-signed certificate in certificate chain" in line
    no_certificate = {"ssl_ca_certs": str(certificates.ca)}
    line = one_line_failure(
        environment(worker_env, tls_redis.tls_url(), broker_use_ssl=no_certificate)
    )
    # The server's alert, or its closing the connection when the client reads first.
    assert "TLS handshake failed: TLSV13_ALERT_CERTIFICATE_REQUIRED" in line or "reset" in line
    plaintext = f"redis://{LOOPBACK}:{tls_redis.tls_port}/0"
    assert "unreachable" in one_line_failure(environment(worker_env, plaintext))
    closed = f"redis://{LOOPBACK}:{tls_redis.port}/0"  # the plaintext port it started on
    assert "unreachable" in one_line_failure(environment(worker_env, closed))


async def test_a_redis_acl_user_with_only_what_a_worker_needs(
    tls_redis: TLSRedisServer,
    certificates: Certificates,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    login = f"{tls_redis.acl_user}:{tls_redis.acl_password}@"
    url = tls_redis.tls_url(login, prefix=f"{tls_redis.acl_prefix}{uuid.uuid4().hex[:8]}:")
    ssl = redis_ssl(certificates)
    await round_trip(worker_env, tmp_path / "acl.log", url, "acl", broker_use_ssl=ssl)
    wrong = tls_redis.tls_url(f"{tls_redis.acl_user}:wrong@", prefix=tls_redis.acl_prefix)
    line = one_line_failure(environment(worker_env, wrong, broker_use_ssl=ssl))
    assert line == f"Error: Redis refused the login for user '{tls_redis.acl_user}'"
    outside = tls_redis.tls_url(login, prefix="elsewhere:")  # keys the user may not touch
    async with TaskQ("t", broker=outside, broker_use_ssl=ssl) as app:
        with pytest.raises(NoPermissionError, match="no permissions to access one of the keys"):
            await app.send_task("itest.add", args=[1, 1])


async def test_rabbitmq_over_tls_as_a_user_of_one_vhost(
    tls_rabbitmq: TLSRabbitMQServer,
    certificates: Certificates,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    server = tls_rabbitmq
    url = server.tls_url(f"{server.vhost_user}:{server.vhost_password}", server.vhost)
    results = f"sqlite:///{tmp_path}/results.db"
    await round_trip(
        worker_env,
        tmp_path / "amqps.log",
        url,
        "amqps",
        broker_use_ssl=amqp_ssl(certificates),
        result_backend=results,
    )


def test_rabbitmq_refuses_wrong_credentials_another_vhost_an_untrusted_server_and_plaintext(
    tls_rabbitmq: TLSRabbitMQServer, certificates: Certificates, worker_env: dict[str, str]
) -> None:
    server, ssl = tls_rabbitmq, amqp_ssl(certificates)
    wrong = server.tls_url(f"{server.vhost_user}:wrong", server.vhost)
    line = one_line_failure(environment(worker_env, wrong, broker_use_ssl=ssl))
    assert line == f"Error: RabbitMQ refused the login for user '{server.vhost_user}'"
    other_vhost = server.tls_url(f"{server.vhost_user}:{server.vhost_password}", "")
    line = one_line_failure(environment(worker_env, other_vhost, broker_use_ssl=ssl))
    assert "would not open vhost '/'" in line
    untrusted = amqp_ssl(certificates, ca=certificates.untrusted_ca)
    line = one_line_failure(environment(worker_env, server.tls_url(), broker_use_ssl=untrusted))
    assert "certificate verify failed: self-signed certificate in certificate chain" in line
    no_certificate = {"ca_certs": str(certificates.ca)}
    line = one_line_failure(
        environment(worker_env, server.tls_url(), broker_use_ssl=no_certificate)
    )
    assert "TLS handshake failed" in line
    plaintext = f"amqp://guest:guest@{LOOPBACK}:{server.tls_port}/"
    assert "unreachable" in one_line_failure(environment(worker_env, plaintext))
