"""Shared fixtures for the whole suite.

Real servers (see tests/servers.py) are session-scoped and started lazily: only when a test
asks for one, once per session, stopped at the end. They are shared, so a test must not stop
or kill them, and should use its own keys, queues or prefixes. Restart and crash tests start a
private server with `start_server(RedisServer(tmp_path, aof=True))` instead.

A missing server binary skips the test with an install hint, except in CI (CI=true or 1),
where it fails: CI is expected to have run `make services`.

Worker subprocesses (`start_worker`, see support.py) are here too, for the integration and the
contract suites: their `worker_env` takes the fixtures `broker_url` and `transport_options`,
which the directory's conftest or the test module defines (tests/integration/conftest.py has
the defaults: an SQLite file, short leases).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cluster_servers import RabbitMQCluster, ReplicatedRedisCluster
from servers import RabbitMQServer, RedisCluster, RedisServer, ServerNotInstalled
from support import WorkerProcess, in_ci, worker_environment

Server = TypeVar("Server", RedisServer, RedisCluster, RabbitMQServer)
Startable = RedisServer | RedisCluster | RabbitMQServer | ReplicatedRedisCluster | RabbitMQCluster


def _start(server: Startable) -> None:
    """Starts `server`; when its binary is missing, fails in CI and skips elsewhere."""
    try:
        server.start()
        return
    except ServerNotInstalled as exc:
        missing = str(exc)
    # Outside the except block, so the report is the one line below, not a chained traceback.
    if in_ci():
        pytest.fail(f"{missing}: CI must provide it (run `make services`)", pytrace=False)
    pytest.skip(f"{missing}; install it with `make services`")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis on loopback without persistence; connect with `redis_server.url`."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis Cluster; `.url` is one node, `.startup_nodes` all of them."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    _start(cluster)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def replicated_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReplicatedRedisCluster]:
    """Six Redis Cluster nodes (3 masters, a replica each, AOF, node timeout 2 s), for one
    module's fail-over tests: a killed node must be started again by the test."""
    cluster = ReplicatedRedisCluster(tmp_path_factory.mktemp("redis-replicated"))
    _start(cluster)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def rabbitmq_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQCluster]:
    """Three RabbitMQ nodes in one cluster (~30 s to start), for one module's fail-over
    tests: a killed node must be started again by the test."""
    cluster = RabbitMQCluster(tmp_path_factory.mktemp("rabbitmq-cluster"))
    _start(cluster)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """A RabbitMQ node (5-15 s to start); `.url` is amqp://guest:guest@127.0.0.1:PORT/."""
    server = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq"))
    _start(server)
    yield server
    server.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[[Server], Server]]:
    """Starts private servers for one test (restart and crash tests) and stops them after it:
    `redis = start_server(RedisServer(tmp_path, aof=True)); ...; redis.kill(); redis.start()`."""
    started: list[RedisServer | RedisCluster | RabbitMQServer] = []

    def start(server: Server) -> Server:
        _start(server)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def worker_env(broker_url: str, transport_options: dict[str, object]) -> dict[str, str]:
    """The environment of a worker subprocess: broker URL and transport options, and
    tests/integration (itest_tasks) on the path."""
    return worker_environment(broker_url, transport_options)


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; all of them are stopped (by pid) after the test.
    `start("-c", "10")` runs itest_tasks' app; `start(app="tasks:app", cwd=example)` another."""
    started: list[WorkerProcess] = []

    def start(*args: str, **where: Any) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(worker_env, log, list(args), **where)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
