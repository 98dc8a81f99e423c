"""AsyncResult: the handle to a task's state and return value in the result store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from taskq import states
from taskq.errors import TaskError, task_error_type
from taskq.stores.base import TaskMeta

if TYPE_CHECKING:
    from taskq.app import TaskQ

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """`AsyncResult(task_id, app=app)` or `app.AsyncResult(task_id)`; every query is awaited."""

    def __init__(self, id: str, *, app: TaskQ) -> None:
        self.id = id
        self.app = app

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def _meta(self) -> TaskMeta:
        store = await self.app.connected_store()
        return await store.get(self.id) or TaskMeta(self.id)

    async def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        """Wait for the task to finish and return its value.

        A failure is raised as a `TaskError` subclass named after the remote exception
        (or returned, when `propagate` is false); `taskq.errors.TimeoutError` after `timeout`.
        """
        store = await self.app.connected_store()
        meta = await store.wait(self.id, timeout)
        return cast(R, self._value(meta, propagate))

    async def status(self) -> str:
        """PENDING (unknown), RECEIVED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return (await self._meta()).status

    state = status

    async def ready(self) -> bool:
        return (await self._meta()).status in states.READY_STATES

    async def successful(self) -> bool:
        return (await self._meta()).status == states.SUCCESS

    async def failed(self) -> bool:
        return (await self._meta()).status == states.FAILURE

    async def result(self) -> R | TaskError | None:
        """The value, the error of a failed task, or None while it is not ready."""
        meta = await self._meta()
        if meta.status not in states.READY_STATES:
            return None
        return cast(R | TaskError, self._value(meta, propagate=False))

    async def traceback(self) -> str | None:
        """The remote traceback text of a failed task."""
        return (await self._meta()).traceback

    async def revoke(self, terminate: bool = False) -> None:
        """Never run this task (see `app.control.revoke`)."""
        await self.app.control.revoke([self.id], terminate=terminate)

    async def forget(self) -> None:
        """Remove the task's state and result from the store."""
        store = await self.app.connected_store()
        await store.forget(self.id)

    @staticmethod
    def _value(meta: TaskMeta, propagate: bool) -> Any:
        if meta.status == states.SUCCESS:
            return meta.result
        error = error_from_meta(meta)
        if propagate:
            raise error
        return error


def error_from_meta(meta: TaskMeta) -> TaskError:
    cls = task_error_type(meta.exc_type or meta.status.title())
    return cls(meta.exc_message or meta.status, meta.traceback)


class EagerResult(AsyncResult[R]):
    """The finished result of a task run inline (`task_always_eager`); never touches the store."""

    def __init__(self, meta: TaskMeta, *, app: TaskQ) -> None:
        super().__init__(meta.task_id, app=app)
        self._eager_meta = meta

    async def _meta(self) -> TaskMeta:
        return self._eager_meta

    async def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        return cast(R, self._value(self._eager_meta, propagate))

    async def forget(self) -> None:
        return None
