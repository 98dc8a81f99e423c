"""Celery's settings at work on every broker: task_annotations, task_default_rate_limit,
task_track_started, task_queues; and the modules a worker imports at start (imports,
include, app.autodiscover_tasks)."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis
from support import eventually

from taskq import TaskQ, states
from taskq.errors import ConfigurationError
from taskq.stores.base import TaskMeta
from taskq.testing import running_worker
from taskq.worker import statewriter

pytestmark = pytest.mark.integration


async def test_annotations_override_the_declared_options(app_settings: dict[str, Any]) -> None:
    annotated, declared = f"annotated-{uuid.uuid4().hex[:8]}", f"declared-{uuid.uuid4().hex[:8]}"
    async with TaskQ("ann", **app_settings) as app:

        @app.task(queue=declared)
        async def routed() -> None: ...

        app.conf.task_annotations = {routed.name: {"queue": annotated}, "*": {"max_retries": 1}}
        await routed.delay()
        broker = await app.connected_broker()
        assert await broker.queue_length(annotated) == 1
        assert await broker.queue_length(declared) == 0
        assert routed.max_retries == 1
        await broker.purge(annotated)


async def test_default_rate_limit_spaces_every_task(app_settings: dict[str, Any]) -> None:
    starts: list[float] = []
    async with TaskQ("rate", task_default_rate_limit="5/s", **app_settings) as app:

        @app.task
        async def limited() -> None:
            starts.append(time.monotonic())

        async with running_worker(app, concurrency=4):
            results = [await limited.delay() for _ in range(4)]
            for result in results:
                await result.get(timeout=15)
    assert starts[-1] - starts[0] >= 3 * 0.2 - 0.05  # one start per 0.2 s, the first at once


async def test_track_started_off_leaves_a_running_task_pending(
    app_settings: dict[str, Any],
) -> None:
    running, release = anyio.Event(), anyio.Event()
    async with TaskQ("track", task_track_started=False, **app_settings) as app:

        @app.task
        async def quiet() -> str:
            running.set()
            await release.wait()
            return "quiet"

        @app.task(track_started=True)
        async def tracked() -> str:
            await release.wait()
            return "tracked"

        async with running_worker(app):
            untracked = await quiet.delay()
            await running.wait()
            started = await tracked.delay()
            # States are written in order: once the second is STARTED, the first would be.
            await eventually(lambda: _has_status(started, states.STARTED))
            assert await untracked.status() == states.PENDING
            release.set()
            assert await untracked.get(timeout=15) == "quiet"
            assert await started.get(timeout=15) == "tracked"


async def test_started_is_written_once_a_task_has_run_a_while(
    app_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that ends within `STARTED_AFTER` stores only its outcome; a longer one shows
    STARTED meanwhile."""
    monkeypatch.setattr(statewriter, "STARTED_AFTER", 1.0)  # far beyond a short task's run
    release = anyio.Event()
    async with TaskQ("started", **app_settings) as app:

        @app.task
        async def short() -> None:
            await anyio.lowlevel.checkpoint()  # yields: before, its STARTED went out meanwhile

        @app.task
        async def long() -> None:
            await release.wait()

        store = await app.connected_store()
        written: dict[str, list[str]] = {}
        set_states = store.set_states

        async def recording(metas: Sequence[TaskMeta], ttl: float | None) -> None:
            for meta in metas:
                written.setdefault(meta.task_id, []).append(meta.status)
            await set_states(metas, ttl)

        monkeypatch.setattr(store, "set_states", recording)
        async with running_worker(app):
            quick = await short.delay()
            await quick.get(timeout=15)
            slow = await long.delay()
            await eventually(lambda: _has_status(slow, states.STARTED))
            release.set()
            await slow.get(timeout=15)
    assert written[quick.id] == [states.SUCCESS]
    assert written[slow.id] == [states.STARTED, states.SUCCESS]


async def _has_status(result: Any, status: str) -> bool:
    return bool(await result.status() == status)


async def test_a_worker_consumes_every_declared_queue(app_settings: dict[str, Any]) -> None:
    first, second = (f"tq-{uuid.uuid4().hex[:8]}" for _ in range(2))
    queues = [first, {"name": second, "max_priority": 5}]
    async with TaskQ("declared", task_queues=queues, **app_settings) as app:

        @app.task
        async def where() -> str:
            return where.request.headers.get("q", "")

        assert app.conf.default_queues() == [first, second]
        async with running_worker(app) as worker:
            assert worker.queues == [first, second]
            results = [await where.apply_async(queue=q, headers={"q": q}) for q in queues_of(app)]
            assert [await r.get(timeout=15) for r in results] == [first, second]


def queues_of(app: TaskQ) -> list[str]:
    return list(app.conf.task_queues)


async def test_queue_arguments_declare_rabbitmq_queues(
    rabbitmq_server: Any, tmp_path: Path
) -> None:
    """x-max-length=1 from task_queues: RabbitMQ keeps only the newest of two messages."""
    queue = f"capped-{uuid.uuid4().hex[:8]}"
    settings = {"task_queues": {queue: {"queue_arguments": {"x-max-length": 1}}}}
    app = TaskQ(
        "amqp", broker=rabbitmq_server.url, backend=f"sqlite:///{tmp_path}/r.db", **settings
    )
    async with app:

        @app.task
        async def capped() -> None: ...

        await capped.apply_async(queue=queue)
        await capped.apply_async(queue=queue)
        broker = await app.connected_broker()
        assert await broker.queue_length(queue) == 1
        await broker.purge(queue)


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
async def test_rabbitmq_queue_options_elsewhere_are_an_error(
    broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path}/b.db"
        if broker == "sqlite"
        else request.getfixturevalue("redis_server").url
    )
    app = TaskQ("x", broker=url, task_queues={"q": {"queue_arguments": {"x-max-length": 1}}})
    with pytest.raises(ConfigurationError, match=r"task_queues\['q'\]: 'queue_arguments' is an"):
        await app.connect()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A Celery-style project on sys.path: proj/app.py and two packages, one with tasks."""
    root = tmp_path / f"proj{uuid.uuid4().hex[:8]}"
    for package in ("", "orders", "billing", "reports"):
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "app.py").write_text(
        "from taskq import TaskQ\n"
        f"app = TaskQ({root.name!r}, broker='sqlite:///{tmp_path}/taskq.db')\n"
    )
    for package, task in (("orders", "place"), ("reports", "summary")):
        (root / package / "tasks.py").write_text(
            f"from {root.name}.app import app\n\n"
            f"@app.task(name={task!r})\n"
            f"async def {task}(n: int) -> str:\n"
            f"    return '{task} ' + str(n)\n"
        )
    sys.path.insert(0, str(tmp_path))
    yield root
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith(root.name)]:
        del sys.modules[name]


def _app_of(project: Path) -> TaskQ:
    module = __import__(f"{project.name}.app", fromlist=["app"])
    app: TaskQ = module.app
    return app


async def test_autodiscover_and_include_are_imported_when_a_worker_starts(
    project: Path,
) -> None:
    app = _app_of(project)
    app.autodiscover_tasks([f"{project.name}.orders", f"{project.name}.billing"])
    app.conf.include = [f"{project.name}.reports.tasks"]
    assert app.user_tasks() == []  # nothing imported until a worker starts
    async with app, running_worker(app):
        assert app.user_tasks() == ["place", "summary"]
        assert await (await app.send_task("place", [1])).get(timeout=15) == "place 1"
        assert await (await app.send_task("summary", [2])).get(timeout=15) == "summary 2"


async def test_autodiscover_of_a_missing_package_is_an_error(project: Path) -> None:
    app = _app_of(project)
    with pytest.raises(ConfigurationError, match=r"cannot import .*nowhere\.tasks"):
        app.autodiscover_tasks([f"{project.name}.nowhere"], force=True)
    app.conf.imports = [f"{project.name}.missing_module"]
    with pytest.raises(ConfigurationError, match=r"imports: cannot import .*missing_module"):
        app.import_task_modules()


async def test_a_worker_without_tasks_says_where_they_come_from(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app_of(project)
    with caplog.at_level(logging.WARNING, logger="taskq.worker"):
        async with app, running_worker(app):
            pass
    [warning] = [r.getMessage() for r in caplog.records if "no tasks registered" in r.getMessage()]
    assert "-A" in warning and "`include`" in warning


async def test_broker_pool_limit_caps_the_connections_to_redis(redis_server: Any) -> None:
    """200 results awaited at once would take 200 connections; with the limit they wait for
    one of 2 (subscriptions, one connection each, are apart)."""
    name = f"cap{uuid.uuid4().hex[:8]}"
    url = f"{redis_server.url}?client_name={name}&prefix={name}:"
    async with TaskQ("pool", broker=url, broker_pool_limit=2) as app:

        @app.task
        async def nap(i: int) -> int:
            await anyio.sleep(0.01)
            return i

        async with running_worker(app, concurrency=20):
            results = [await nap.delay(i) for i in range(200)]
            values: list[int] = []

            async def collect(result: Any) -> None:
                values.append(await result.get(timeout=30))

            async with anyio.create_task_group() as group:
                for result in results:
                    group.start_soon(collect, result)
            clients = await Redis.from_url(redis_server.url).client_list()
    commands = [
        c for c in clients if c.get("name") == name and c.get("sub") == c.get("psub") == "0"
    ]
    assert sorted(values) == list(range(200))
    assert 1 <= len(commands) <= 2


@pytest.mark.parametrize("limit", [-1, "10", 1.5])
def test_broker_pool_limit_is_a_positive_integer(limit: object) -> None:
    with pytest.raises(ConfigurationError, match="broker_pool_limit must be an integer >= 1"):
        TaskQ("x", broker_pool_limit=limit).conf.validate()
    assert TaskQ("x", broker_pool_limit=0).conf.broker_pool_limit is None  # Celery's "no pool"


async def test_task_compression_round_trips_on_every_broker(app_settings: dict[str, Any]) -> None:
    async with TaskQ("gz", task_compression="gzip", **app_settings) as app:

        @app.task
        async def size(text: str, *, repeat: int) -> int:
            return len(text) * repeat

        @app.task(compression=None)
        async def plain(n: int) -> int:
            return n

        async with running_worker(app):
            assert await (await size.delay("ab" * 50_000, repeat=2)).get(timeout=15) == 200_000
            assert await (await plain.delay(3)).get(timeout=15) == 3
            sent = await size.apply_async(["x"], {"repeat": 1}, compression="zlib")
            assert await sent.get(timeout=15) == 1


async def test_an_unknown_compression_is_refused_before_anything_is_sent(
    app_settings: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError, match="unknown compression 'zstd'"):
        await TaskQ("gz", task_compression="zstd", **app_settings).connect()
    async with TaskQ("gz", **app_settings) as app:

        @app.task
        async def noop() -> None: ...

        with pytest.raises(ConfigurationError, match="unknown compression 'brotli'"):
            await noop.apply_async(compression="brotli")
        broker = await app.connected_broker()
        assert await broker.queue_length(app.conf.task_default_queue) == 0
