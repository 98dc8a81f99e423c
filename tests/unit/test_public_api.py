"""What `import taskq` gives a user, and what it does not load."""

import subprocess
import sys

import pytest

import taskq
from taskq import states
from taskq.errors import ChordError, TaskError, TaskRevokedError
from taskq.result import error_from_meta
from taskq.stores.base import TaskMeta
from taskq.testing import memory_app, running_worker


def test_a_producer_does_not_import_the_worker() -> None:
    code = "import sys, taskq; print(sorted(m for m in sys.modules if m.startswith('taskq')))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    for plumbing in ("taskq.worker", "taskq.execution", "timelimits"):
        assert plumbing not in loaded.stdout


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
