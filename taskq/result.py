"""AsyncResult: the handle to a task's state and return value in the result store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import orjson

from taskq import defaults, states
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
        self.parent: AsyncResult[Any] | None = None  # the previous task of a chain

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

    info = result

    async def wait(self, timeout: float | None = None, propagate: bool = True) -> R:
        """`get()`, by Celery's other name."""
        return await self.get(timeout, propagate)

    async def traceback(self) -> str | None:
        """The remote traceback text of a failed task."""
        return (await self._meta()).traceback

    async def name(self) -> str | None:
        """The task's registered name, once a worker has recorded a state."""
        return (await self._meta()).task

    async def args(self) -> list[Any] | None:
        """The positional arguments of the call (None for a msgpack or pickle message)."""
        return (await self._meta()).args

    async def kwargs(self) -> dict[str, Any] | None:
        """The keyword arguments of the call (None for a msgpack or pickle message)."""
        return (await self._meta()).kwargs

    async def queue(self) -> str | None:
        """The queue the call was routed to."""
        return (await self._meta()).queue

    async def worker(self) -> str | None:
        """The hostname of the worker that ran it (`eager` for an eager run)."""
        return (await self._meta()).worker

    async def retries(self) -> int:
        """How many times it was retried so far."""
        return (await self._meta()).retries

    async def date_done(self) -> datetime | None:
        """When it finished (UTC), or None while it is not ready."""
        done = (await self._meta()).date_done
        return None if done is None else datetime.fromtimestamp(done, UTC)

    async def children(self) -> list[Any]:
        """The results of the tasks it published while it ran, in order (AsyncResults)."""
        return [_from_ids(child, self.app) for child in (await self._meta()).children or ()]

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


GROUP_KEY = "group:{}"


class GroupResult:
    """The results of a group, in submission order. `GroupResult.restore(id, app=app)`
    finds a published group again, in any process."""

    def __init__(self, id: str, results: list[Any], *, app: TaskQ) -> None:
        self.id = id
        self.results = results
        self.app = app

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} of {len(self.results)}>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    async def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's value, in order; the first failure raises unless not `propagate`."""
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            return [await result.get(propagate=propagate) for result in self.results]

    async def completed_count(self) -> int:
        """How many members succeeded."""
        return sum([await result.successful() for result in self.results])

    async def ready(self) -> bool:
        return all([await result.ready() for result in self.results])

    async def successful(self) -> bool:
        return all([await result.successful() for result in self.results])

    async def failed(self) -> bool:
        return any([await result.failed() for result in self.results])

    async def save(self) -> None:
        """Keep the member ids in the store (for `result_expires`), for `restore`."""
        await save_group(self.app, self.id, [_ids_of(result) for result in self.results])

    @classmethod
    async def restore(cls, id: str, *, app: TaskQ) -> GroupResult | None:
        """The saved group `id`, or None when it is unknown or expired."""
        store = await app.connected_store()
        raw = await store.get_key(GROUP_KEY.format(id))
        if raw is None:
            return None
        return cls(id, [_from_ids(member, app) for member in orjson.loads(raw)], app=app)


async def save_group(app: TaskQ, group_id: str, ids: list[Any]) -> None:
    """Keep a group's member ids (`{"group": id, "results": [...]}` for a nested group), for
    `result_expires`; saving it again replaces them."""
    store = await app.connected_store()
    ttl = app.conf.result_expires or defaults.RESULT_EXPIRES
    await store.set_key(GROUP_KEY.format(group_id), orjson.dumps(ids), ttl)


def _ids_of(result: Any) -> Any:
    if isinstance(result, GroupResult):
        return {"group": result.id, "results": [_ids_of(r) for r in result.results]}
    return result.id


def _from_ids(member: Any, app: TaskQ) -> Any:
    if isinstance(member, dict):
        return GroupResult(member["group"], [_from_ids(m, app) for m in member["results"]], app=app)
    return AsyncResult(member, app=app)
