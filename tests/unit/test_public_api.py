"""What `import taskq` gives a user, and what it does not load."""

import subprocess
import sys
from pathlib import Path

import pytest

import taskq
from taskq import states
from taskq.errors import ChordError, TaskError, TaskRevokedError
from taskq.result import error_from_meta
from taskq.stores.base import TaskMeta
from taskq.testing import memory_app, running_worker

PRODUCER = """
import asyncio, sys, taskq
app = taskq.TaskQ("producer", broker=sys.argv[1])

@app.task
async def add(x: int, y: int) -> int:
    return x + y

async def main() -> None:
    async with app:
        await add.delay(1, 2)
        assert await (await app.connected_broker()).queue_length("default") == 1

asyncio.run(main())
print(" ".join(sorted(sys.modules)))
"""

# What a producer does not need: the worker, beat, the CLI, the other brokers, and the
# standard library's modules that only they (or a value of theirs) import.
NOT_IN_A_PRODUCER = (
    "taskq.worker", "taskq.execution", "taskq.beat", "taskq.cli", "taskq.exporter",
    "taskq.daemon", "typer", "aio_pika", "aiormq", "pickle", "multiprocessing", "http.server",
    "urllib.request", "decimal",
)  # fmt: skip


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
def test_a_producer_publishing_loads_no_worker_beat_cli_amqp_or_pickle(
    broker: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("redis_server").url
        if broker == "redis"
        else f"sqlite:///{tmp_path / 'broker.db'}"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", PRODUCER, url], capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"taskq.brokers.{broker}" in loaded  # it did publish
    unwanted = [name for name in loaded if name.startswith(NOT_IN_A_PRODUCER)]
    assert unwanted == []


def test_what_users_write_and_catch_is_exported() -> None:
    for name in ("Middleware", "Retry", "SoftTimeLimitExceeded", "TimeLimitExceeded",
                 "MaxRetriesExceededError", "TaskRevokedError", "ChordError", "crontab",
                 "Interval", "TaskQ", "AsyncResult", "SyncResult", "chain", "group",
                 "chord"):  # fmt: skip
        assert name in taskq.__all__ and hasattr(taskq, name)
    assert taskq.Worker.__module__ == "taskq.worker.worker"  # still there, loaded on use


@pytest.mark.parametrize("error", [TaskRevokedError("expired"), ChordError("member 3 failed")])
def test_a_recorded_taskq_error_is_raised_as_its_own_class(error: Exception) -> None:
    raised = error_from_meta(TaskMeta.from_exception("id", error))
    assert isinstance(raised, TaskError) and isinstance(raised, type(error))


async def test_get_on_an_expired_task_raises_task_revoked_error() -> None:
    app = memory_app()

    @app.task
    async def late() -> None: ...

    async with app, running_worker(app):
        result = await late.apply_async(expires=-1)  # expired a second ago: never runs
        with pytest.raises(TaskRevokedError, match="expired"):
            await result.get(timeout=5)
        assert await result.status() == states.REVOKED
