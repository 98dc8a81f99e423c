"""The worker's task-state writes: behind the executor, in batches, in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio

from taskq.errors import MessageError
from taskq.stores.base import ResultStore, TaskMeta

logger = logging.getLogger("taskq.worker")

# Past this many states waiting to be written, `record` waits for the write: a store
# slower than the tasks holds the task loops back instead of growing the backlog.
MAX_BACKLOG = 1000


@dataclass(slots=True)
class _Flush:
    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None


class StateWriter:
    """Writes task states for a worker, one batch at a time, so a task's states land in order.

    `put(meta)` queues a state without waiting (STARTED); `write(meta)` queues one and returns
    once it is stored; `record(meta, wait=False)` waits only while the backlog is too long.
    A queued state not yet written when the same task's next state comes is replaced by it:
    a task that ends before its STARTED went out skips that write. `run()` is the writing
    loop, a service of the worker; `flush()` waits for everything queued to be written.
    """

    def __init__(self, store: ResultStore, ttl: float | None) -> None:
        self._store = store
        self._ttl = ttl
        self._queued: dict[str, TaskMeta] = {}
        self._next = _Flush()
        self._writing: _Flush | None = None
        self._wanted = anyio.Event()

    def put(self, meta: TaskMeta) -> None:
        self._queued[meta.task_id] = meta
        self._wanted.set()

    async def write(self, meta: TaskMeta) -> None:
        flush = self._next
        self.put(meta)
        await flush.done.wait()
        if flush.error is not None:
            raise flush.error

    async def record(self, meta: TaskMeta, *, wait: bool) -> None:
        if wait or len(self._queued) >= MAX_BACKLOG:
            await self.write(meta)
        else:
            self.put(meta)

    async def flush(self) -> None:
        """Return once every state queued so far is written (or failed to be)."""
        flush = self._next if self._queued else self._writing
        if flush is not None:
            await flush.done.wait()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted = anyio.Event()
            metas, self._queued = list(self._queued.values()), {}
            flush, self._next = self._next, _Flush()
            self._writing = flush
            with anyio.CancelScope(shield=True):  # writers are waiting on it
                try:
                    await self._store_all(metas)
                except Exception as exc:
                    logger.exception("Could not record %d task state(s)", len(metas))
                    flush.error = exc
                finally:
                    self._writing = None
                    flush.done.set()

    async def _store_all(self, metas: list[TaskMeta]) -> None:
        try:
            await self._store.set_states(metas, self._ttl)
        except MessageError:  # a result that does not serialize: record that failure instead
            for meta in metas:
                try:
                    await self._store.set_state(meta.task_id, meta, self._ttl)
                except MessageError as exc:
                    failure = TaskMeta.from_exception(
                        meta.task_id, exc, task=meta.task, retries=meta.retries, worker=meta.worker
                    )
                    await self._store.set_state(meta.task_id, failure, self._ttl)
