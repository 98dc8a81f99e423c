"""AsyncResult: the handle to a task's state and return value in the result store."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import nullcontext, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import orjson

from taskq import defaults, states
from taskq.errors import TASK_ERROR_TAG, TaskError, task_error_type
from taskq.stores.base import TaskMeta
from taskq.tagging import TYPE, VALUE, tag

if TYPE_CHECKING:
    from taskq.app import TaskQ

R = TypeVar("R")

RESULT_TAG, GROUP_RESULT_TAG, RESULT_SET_TAG = "asyncresult", "groupresult", "resultset"


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

    def tagged_json(self) -> dict[str, Any]:
        """As a task's result holds it (`taskq.tagging`): read back by `restore`."""
        return tag(RESULT_TAG, {"id": self.id, "parent": _tagged_or_none(self.parent)})

    async def _meta(self) -> TaskMeta:
        store = await self.app.connected_store()
        return await store.get(self.id) or TaskMeta(self.id)

    async def _ready_meta(self, timeout: float | None) -> TaskMeta:
        store = await self.app.connected_store()
        return await store.wait(self.id, timeout)

    async def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        """Wait for the task to finish and return its value.

        A failure is raised as a `TaskError` subclass named after the remote exception
        (or returned, when `propagate` is false); `taskq.errors.TimeoutError` after `timeout`.
        A result handle or error the task returned comes back as one (see `restore`).
        """
        store = await self.app.connected_store()  # not `_ready_meta`: one coroutine less
        return cast(R, self._value(await store.wait(self.id, timeout), propagate))

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

    def collect(
        self, timeout: float | None = None, propagate: bool = True
    ) -> AsyncIterator[tuple[Any, Any]]:
        """`(result, value)` for this task and, as each finishes, for what it returned (a
        result or a group's) and published (`children()`), breadth first."""
        return collect(self, timeout, propagate)

    async def revoke(self, terminate: bool = False) -> None:
        """Never run this task (see `app.control.revoke`)."""
        await self.app.control.revoke([self.id], terminate=terminate)

    async def forget(self) -> None:
        """Remove the task's state and result from the store."""
        store = await self.app.connected_store()
        await store.forget(self.id)

    def _value(self, meta: TaskMeta, propagate: bool) -> Any:
        if meta.status == states.SUCCESS:
            value = meta.result
            return restore(value, self.app) if type(value) in _CONTAINERS else value
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

    async def _ready_meta(self, timeout: float | None) -> TaskMeta:
        return self._eager_meta

    async def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        return cast(R, self._value(self._eager_meta, propagate))

    async def forget(self) -> None:
        return None


class ResultSet:
    """Results to wait for together, in order: `ResultSet([r1, r2])`. Members are
    `AsyncResult`s or sets (a `GroupResult` nested in a group)."""

    def __init__(self, results: Iterable[Any]) -> None:
        self.results: list[Any] = list(results)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.results)}>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:  # a set changes: it has no hash
        return type(other) is type(self) and other.results == self.results

    def tagged_json(self) -> dict[str, Any]:
        """As a task's result holds it (`taskq.tagging`): read back by `restore`."""
        return tag(RESULT_SET_TAG, {"results": _tagged_members(self.results)})

    def add(self, result: Any) -> None:
        """Add a member, unless it is one already."""
        if result not in self.results:
            self.results.append(result)

    def update(self, results: Iterable[Any]) -> None:
        for result in results:
            self.add(result)

    def remove(self, result: Any) -> None:
        """Remove a member (a result or its id); `KeyError` if it is none."""
        for index, member in enumerate(self.results):
            if member == result or getattr(member, "id", None) == result:
                del self.results[index]
                return
        raise KeyError(result)

    def discard(self, result: Any) -> None:
        """Remove a member if it is one."""
        with suppress(KeyError):
            self.remove(result)

    def clear(self) -> None:
        self.results.clear()

    async def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's value, in order; the first failure raises unless not `propagate`
        (then its error stands in the list); `TimeoutError` after `timeout` for them all."""
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            return [await result.get(propagate=propagate) for result in self.results]

    join = get

    async def completed_count(self) -> int:
        """How many members succeeded."""
        return sum([await result.successful() for result in self.results])

    async def ready(self) -> bool:
        """Whether every member finished, one way or another."""
        return all([await result.ready() for result in self.results])

    async def waiting(self) -> bool:
        """Whether a member has not finished yet."""
        return not await self.ready()

    async def successful(self) -> bool:
        """Whether every member succeeded."""
        return all([await result.successful() for result in self.results])

    async def failed(self) -> bool:
        """Whether a member failed."""
        return any([await result.failed() for result in self.results])

    def collect(
        self, timeout: float | None = None, propagate: bool = True
    ) -> AsyncIterator[tuple[Any, Any]]:
        """As `AsyncResult.collect`, from this set."""
        return collect(self, timeout, propagate)

    async def revoke(self, terminate: bool = False) -> None:
        """Never run any of the members (see `app.control.revoke`)."""
        ids = list(_leaf_ids(self))
        if ids:
            app = next(iter(_leaves(self))).app
            await app.control.revoke(ids, terminate=terminate)

    async def forget(self) -> None:
        for result in self.results:
            await result.forget()


class GroupResult(ResultSet):
    """The results of a group, in submission order. `GroupResult.restore(id, app=app)`
    finds a published group again, in any process; `parent` is the result before it in a
    chain, if any."""

    def __init__(self, id: str, results: Iterable[Any], *, app: TaskQ, parent: Any = None) -> None:
        super().__init__(results)
        self.id = id
        self.app = app
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} of {len(self.results)}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and (other.id, other.results) == (
            self.id,
            self.results,
        )

    def __hash__(self) -> int:
        return hash(self.id)

    def tagged_json(self) -> dict[str, Any]:
        """As a task's result holds it (`taskq.tagging`): read back by `restore`."""
        value = {
            "id": self.id,
            "results": _tagged_members(self.results),
            "parent": _tagged_or_none(self.parent),
        }
        return tag(GROUP_RESULT_TAG, value)

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


GROUP_KEY = "group:{}"


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


# -- tagged values: result handles and errors a task returned ----------------------------


_CONTAINERS = frozenset({dict, list})  # what `restore` looks into


def restore(value: Any, app: TaskQ) -> Any:
    """`value` with the tagged result handles and errors in it (`taskq.tagging`) read back,
    bound to `app`; anything else as it is. Only lists and dicts are looked into."""
    kind = type(value)
    if kind is dict:
        found = value.get(TYPE)
        if type(found) is str and len(value) == 2 and VALUE in value and found in _READERS:
            return _READERS[found](value[VALUE], app)
        return {key: restore(item, app) for key, item in value.items()}
    if kind is list:
        return [restore(item, app) for item in value]
    return value


def _read_result(value: dict[str, Any], app: TaskQ) -> AsyncResult[Any]:
    result: AsyncResult[Any] = AsyncResult(value["id"], app=app)
    result.parent = restore(value.get("parent"), app)
    return result


def _read_group(value: dict[str, Any], app: TaskQ) -> GroupResult:
    members = restore(value["results"], app)
    return GroupResult(value["id"], members, app=app, parent=restore(value.get("parent"), app))


def _read_set(value: dict[str, Any], app: TaskQ) -> ResultSet:
    return ResultSet(restore(value["results"], app))


def _read_error(value: dict[str, Any], app: TaskQ) -> TaskError:
    return task_error_type(value["type"])(value["message"], value.get("traceback"))


_READERS: dict[str, Callable[[Any, TaskQ], Any]] = {
    RESULT_TAG: _read_result,
    GROUP_RESULT_TAG: _read_group,
    RESULT_SET_TAG: _read_set,
    TASK_ERROR_TAG: _read_error,
}


def _tagged_or_none(result: Any) -> dict[str, Any] | None:
    return None if result is None else result.tagged_json()


def _tagged_members(results: list[Any]) -> list[dict[str, Any]]:
    return [result.tagged_json() for result in results]


# -- collect --------------------------------------------------------------------------


async def collect(
    start: AsyncResult[Any] | ResultSet, timeout: float | None, propagate: bool
) -> AsyncIterator[tuple[Any, Any]]:
    """`(result, value)` for `start` and what it leads to, breadth first, each once: a
    set's members, the handle a task returned and the tasks it published."""
    seen: set[str] = set()
    pending: deque[Any] = deque()

    def visit(handle: Any) -> None:
        if isinstance(handle, ResultSet):
            if getattr(handle, "id", None) in seen:
                return
            seen.update(_leaf_ids(handle))  # its members are reached through it
            if isinstance(handle, GroupResult):
                seen.add(handle.id)
            pending.append(handle)
        elif isinstance(handle, AsyncResult) and handle.id not in seen:
            seen.add(handle.id)
            pending.append(handle)

    visit(start)
    while pending:
        node = pending.popleft()
        if isinstance(node, ResultSet):
            yield node, await node.get(timeout, propagate)
            pending.extend(node.results)
            continue
        meta = await node._ready_meta(timeout)
        value = node._value(meta, propagate)
        yield node, value
        visit(value)
        for child in meta.children or ():
            visit(_from_ids(child, node.app))


def _leaves(results: ResultSet) -> Iterator[AsyncResult[Any]]:
    for member in results.results:
        if isinstance(member, ResultSet):
            yield from _leaves(member)
        else:
            yield member


def _leaf_ids(results: ResultSet) -> Iterator[str]:
    return (leaf.id for leaf in _leaves(results))
