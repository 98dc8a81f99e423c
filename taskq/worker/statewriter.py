"""The worker's task-state writes: behind its task loops, in batches, in order."""

from __future__ import annotations

import logging

from taskq.batching import Batcher
from taskq.stores.base import ResultStore, TaskMeta

logger = logging.getLogger("taskq.worker")

# Past this many states waiting to be written, `record` waits for the write: a store
# slower than the tasks holds the task loops back instead of growing the backlog.
MAX_BACKLOG = 1000


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
        self._batches: Batcher[TaskMeta, None] = Batcher(self._store_all, served=True)

    def put(self, meta: TaskMeta) -> None:
        self._batches.put(meta)

    async def write(self, meta: TaskMeta) -> None:
        await self._batches.put(meta).wait()

    async def record(self, meta: TaskMeta, *, wait: bool) -> None:
        if wait or self._batches.pending >= MAX_BACKLOG:
            await self.write(meta)
        else:
            self.put(meta)

    async def flush(self) -> None:
        """Return once every state queued so far is written (or failed to be)."""
        await self._batches.drain()

    async def run(self) -> None:
        await self._batches.serve()

    async def _store_all(self, metas: list[TaskMeta]) -> None:
        latest = {meta.task_id: meta for meta in metas}  # each task's last state, in order
        try:
            await self._store.set_states(list(latest.values()), self._ttl)
        except Exception:
            logger.exception("Could not record %d task state(s)", len(latest))
            raise
