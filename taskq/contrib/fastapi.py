"""FastAPI helpers: connect the app for the server's lifetime, and show a task's state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from taskq.app import TaskQ
from taskq.stores.base import TaskMeta


def lifespan(app: TaskQ) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """`FastAPI(lifespan=lifespan(app))`: connect on startup, close on shutdown."""

    @asynccontextmanager
    async def connected(_: Any) -> AsyncIterator[None]:
        async with app:
            yield

    return connected


async def task_status(app: TaskQ, task_id: str) -> dict[str, Any]:
    """A JSON-ready view of a task: id, state, and its result or error."""
    store = await app.connected_store()
    meta = await store.get(task_id) or TaskMeta(task_id)
    view: dict[str, Any] = {"id": task_id, "state": meta.status}
    if meta.exc_type is not None:
        view["error"] = {"type": meta.exc_type, "message": meta.exc_message}
    elif meta.ready:
        view["result"] = meta.result
    return view
