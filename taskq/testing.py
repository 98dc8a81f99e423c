"""Helpers for testing code that uses taskq: an in-process worker and throwaway apps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from taskq.app import TaskQ
from taskq.elements import new_id
from taskq.worker.worker import Worker


def memory_app(main: str = "tests", **settings: Any) -> TaskQ:
    """An app on a private in-memory broker and store: nothing is shared with other apps."""
    url = f"memory://{new_id()}"
    return TaskQ(main, broker=url, backend=url, **settings)


@asynccontextmanager
async def running_worker(app: TaskQ, **options: Any) -> AsyncIterator[Worker]:
    """Run a `Worker` for `app` in this event loop for the duration of the block.

    Leaving the block is a warm shutdown: running tasks finish, reserved ones go back.
    """
    worker = Worker(app, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await worker.ready.wait()
        try:
            yield worker
        finally:
            worker.stop()
