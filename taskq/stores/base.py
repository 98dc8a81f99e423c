"""The result store protocol, the stored task metadata, and the URL -> store factory."""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from taskq import defaults, states, typed_json
from taskq.chords import Added
from taskq.config import Settings, checked_options
from taskq.errors import ConfigurationError, MessageError, TimeoutError
from taskq.urls import load_backend_class
from taskq.wakeups import Backoff, wake, wake_generation, watching

SETTING = "result_backend_transport_options"


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """What a store reads of `result_backend_transport_options`: `polling_interval` (how long
    a `wait()` that must poll sleeps at most), and the options of its own (`transport`), whose
    names it gives; any other name there is a `ConfigurationError`."""

    polling_interval: float
    transport: dict[str, Any]

    @classmethod
    def read(cls, conf: Settings, own: frozenset[str] = frozenset()) -> StoreOptions:
        options = checked_options(
            conf.result_backend_transport_options, own | {"polling_interval"}, SETTING
        )
        interval = options.pop("polling_interval", defaults.POLLING_INTERVAL)
        if not isinstance(interval, int | float) or interval <= 0:
            raise ConfigurationError(f"{SETTING}['polling_interval'] must be positive seconds")
        return cls(float(interval), options)


@dataclass(slots=True)
class TaskMeta:
    """What the store knows of one task. A failure keeps the exception's type,
    message and traceback text; no exception object is ever pickled. `args` and `kwargs`
    are those of a JSON message (None for another serializer's, which JSON may not hold);
    `children` the results the task published while it ran, as saved groups hold them
    (a task id, or `{"group": id, "results": [...]}`)."""

    task_id: str
    status: str = states.PENDING
    result: Any = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    task: str | None = None
    retries: int = 0
    worker: str | None = None
    date_done: float | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    queue: str | None = None
    children: list[Any] | None = None

    @classmethod
    def from_exception(cls, task_id: str, exc: BaseException, **fields: Any) -> TaskMeta:
        """A FAILURE that records `exc`'s qualified type, message and traceback text."""
        return cls(task_id, states.FAILURE, **failure_fields(exc), **fields)

    @property
    def ready(self) -> bool:
        return self.status in states.READY_STATES

    def encode(self) -> bytes:
        """JSON with the result's datetimes, UUIDs, decimals... tagged (`typed_json`)."""
        try:
            return typed_json.dumps(self)  # orjson writes a dataclass's fields in their order
        except TypeError as exc:
            raise MessageError(f"task {self.task_id}: result is not serializable: {exc}") from exc

    @classmethod
    def decode(cls, raw: bytes) -> TaskMeta:
        data = typed_json.loads(raw)
        return cls(**{name: data.get(name) for name in _FIELDS if name in data})


_FIELDS = tuple(TaskMeta.__dataclass_fields__)


def failure_fields(exc: BaseException) -> dict[str, Any]:
    """What a failure records of `exc`: its qualified type, message and traceback text."""
    return {
        "exc_type": exception_type(exc),
        "exc_message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "date_done": time.time(),
    }


def exception_type(exc: BaseException) -> str:
    """How a failure names its exception's type: `ValueError`, `shop.errors.PaymentDeclined`."""
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


class ResultStore(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def set_state(self, task_id: str, meta: TaskMeta, ttl: float | None) -> None: ...

    async def set_states(self, metas: Sequence[TaskMeta], ttl: float | None) -> None:
        """`set_state` for many tasks in one round trip; `MessageError` before writing any
        if one does not serialize."""
        ...

    def write_domain(self, task_id: str) -> Hashable:
        """What the task's state writes stall together with when a node is lost: a worker
        batches each domain's writes apart, so a stalled domain holds back no other. A pure
        function of the id, since a task's states must land in order; one domain for every
        task unless the store spreads its keys over nodes."""
        return None

    @property
    def spreads_writes(self) -> bool:
        """Whether `write_domain` tells apart more than one domain."""
        return False

    async def get(self, task_id: str) -> TaskMeta | None: ...

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskMeta | None]:
        """`get` for many ids in one round trip, in order."""
        ...

    async def wait(self, task_id: str, timeout: float | None) -> TaskMeta:
        """The task's meta once it is ready; `TimeoutError` (taskq's) after `timeout`."""
        ...

    async def forget(self, task_id: str) -> None: ...

    async def chord_part_done(self, group_id: str, task_id: str, size: int) -> bool:
        """True exactly once per group: when its last distinct member is recorded, counting
        `size` and the members added to it (`chord_add_member`) so far."""
        ...

    async def chord_add_member(self, group_id: str, token: str, task_id: str) -> Added:
        """Add a member to the chord `group_id` (`Task.add_to_chord`), once per `token`:
        called again with it, the member added the first time."""
        ...

    async def chord_added(self, group_id: str) -> list[str]:
        """The task ids of the members added to the chord, in the order they were added."""
        ...

    # Plain keys and values, apart from task states: idempotency keys, rate-limit slots, beat's
    # entries and state, saved groups.

    async def set_key(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `value` under `key` (for `ttl` seconds; None: until deleted)."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store `value` under `key` unless a live value is there; True if it stored it."""
        ...

    async def get_key(self, key: str) -> bytes | None:
        """The live value under `key`, if any."""
        ...

    async def delete_key(self, key: str) -> None: ...

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        """Acquire the lease `name` for `owner`, or renew it if `owner` holds it."""
        ...

    async def lease_remaining(self, name: str) -> float | None:
        """Seconds until the lease `name` ends unless renewed; None when nobody holds it."""
        ...

    async def lease_holder(self, name: str) -> str | None:
        """The owner holding the lease `name` now, if any (beat's leader, for a monitor)."""
        ...

    async def revoke(self, task_ids: Sequence[str], ttl: float) -> None: ...

    async def revoked(self, task_ids: Sequence[str]) -> set[str]: ...

    async def all_revoked(self) -> set[str]:
        """Every task id revoked now: what a starting worker loads."""
        ...


def ready_key(scope: str, task_id: str) -> str:
    """The wake-up key for `task_id` becoming ready in the store identified by `scope`."""
    return f"result\0{scope}\0{task_id}"


def announce_ready(scope: str, meta: TaskMeta) -> None:
    """Wake this process's `wait()`s for `meta`'s task, if it is ready."""
    if meta.ready:
        wake(ready_key(scope, meta.task_id))


async def wait_until_ready(
    scope: str,
    task_id: str,
    fetch: Callable[[str], Awaitable[TaskMeta | None]],
    timeout: float | None,
    polling_interval: float,
) -> TaskMeta:
    """Fetch until the task is ready: woken at once by `announce_ready` in this process,
    otherwise polling with a backoff that grows to `polling_interval`."""
    key = ready_key(scope, task_id)
    backoff = Backoff(polling_interval)
    with watching(key), anyio.move_on_after(timeout):
        while True:
            seen = wake_generation(key)
            meta = await fetch(task_id)
            if meta is not None and meta.ready:
                return meta
            await backoff.sleep(key, seen)
    raise TimeoutError(f"task {task_id} was not ready within {timeout} s")


_STORES: dict[str, str] = {
    "memory": "taskq.stores.memory:MemoryStore",
    "sqlite": "taskq.stores.sqlite:SQLiteStore",
    "redis": "taskq.stores.redis:RedisStore",
    "rediss": "taskq.stores.redis:RedisStore",
}


def create_store(url: str, conf: Settings | None = None) -> ResultStore:
    cls = load_backend_class(url, _STORES, "result backend")
    store: ResultStore = cls(url, conf or Settings())
    return store
