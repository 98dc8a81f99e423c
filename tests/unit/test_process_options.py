"""The options of multi-process workers, checked before anything starts."""

from __future__ import annotations

import pytest
import typer

from taskq import TaskQ
from taskq.cli import child_arguments, cli
from taskq.errors import ConfigurationError
from taskq.testing import running_worker
from taskq.worker.autoscale import parse_autoscale
from taskq.worker.worker import Worker


def test_autoscale_is_max_then_min() -> None:
    assert parse_autoscale("10,3") == (10, 3)
    assert parse_autoscale("8") == (8, 1)
    for bad in ("3,10", "a,b", "1,2,3", "0", ""):
        with pytest.raises(ConfigurationError, match="--autoscale"):
            parse_autoscale(bad)


async def test_autoscale_sets_the_concurrency_itself() -> None:
    app = TaskQ("shop", broker="memory://autoscale")
    with pytest.raises(ConfigurationError, match="not with -c/--concurrency"):
        Worker(app, autoscale=(10, 2), concurrency=5)
    worker = Worker(app, autoscale=(10, 2), prefetch_multiplier=4)
    assert (worker.concurrency, worker.prefetch) == (2, 40)


def test_pool_process_is_for_plain_functions() -> None:
    app = TaskQ("shop", broker="memory://pool")
    with pytest.raises(TypeError, match="pool='process' is for plain functions"):

        @app.task(pool="process")
        async def on_the_loop() -> None: ...

    with pytest.raises(ValueError, match="pool must be 'thread' or 'process', not 'fork'"):

        @app.task(pool="fork")
        def forked() -> None: ...


def test_worker_pool_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="Celery's prefork is 'process'"):
        TaskQ("shop", worker_pool="prefork").conf.validate()
    with pytest.raises(ConfigurationError, match="worker_max_tasks_per_child must be an integer"):
        TaskQ("shop", worker_max_tasks_per_child=0).conf.validate()
    with pytest.raises(ConfigurationError, match="worker_processes must be an integer >= 0"):
        TaskQ("shop", worker_processes=-1).conf.validate()


async def test_recycling_with_nothing_to_recycle_is_an_error() -> None:
    app = TaskQ("shop", broker="memory://recycle")
    with pytest.raises(ConfigurationError, match="this worker has neither"):
        await Worker(app, max_tasks_per_child=10).run()


def test_a_supervised_child_gets_every_option_but_the_supervisor_s() -> None:
    command = typer.main.get_command(cli).commands["worker"]  # type: ignore[attr-defined]
    given = ["-A", "shop:app", "--processes", "2", "-n", "w", "-c", "3", "-E", "--pool", "process"]
    context = command.make_context("worker", given)
    assert child_arguments(context) == [
        "--app", "shop:app", "--concurrency", "3", "--task-events", "--pool", "process",
    ]  # fmt: skip


async def test_pool_grow_and_shrink_move_the_autoscale_bounds_past_them() -> None:
    app = TaskQ("shop", broker="memory://bounds")
    async with running_worker(app, autoscale=(4, 2)) as worker:
        assert worker.autoscaler is not None
        await app.control.pool_grow(5)
        assert (worker.concurrency, worker.autoscaler.maximum) == (7, 7)
        await app.control.pool_shrink(6)
        assert (worker.concurrency, worker.autoscaler.minimum) == (1, 1)
