"""The worker's task-state writes: behind its task loops, in batches, in order per task."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskq.batching import Batcher
from taskq.execution.job import Written
from taskq.stores.base import ResultStore, TaskMeta

logger = logging.getLogger("taskq.worker")

# Past this many states waiting to be written, `record` waits for the write: a store
# slower than the tasks (or a domain whose node is lost) holds the task loops back instead
# of growing the backlog, and with it the `acks_late` acks waiting for their states.
MAX_BACKLOG = 1000
# A STARTED is queued once its task has run this long (seconds): one that ends sooner goes
# straight to its final state, and a short task's round trip is not held up behind the
# write of a STARTED that its final state replaces at once.
STARTED_AFTER = 0.01


class StateWriter:
    """Writes task states for a worker, in batches, one batch at a time per write domain of
    the store (`ResultStore.write_domain`): a task's states land in order, and a domain whose
    node is lost holds back the writes of no other.

    `put(meta)` queues a STARTED once its task has run for `STARTED_AFTER`, without waiting
    for anything (the task's next state cancels it); `write(meta)` queues one and returns
    once it is stored; `record(meta, wait=False, acked=...)` waits only while the backlog is
    too long, or for the state of an `acks_late` task on a store with one write domain; it
    returns an `acks_late` task's write still under way, for its ack to wait off the slot.
    A queued state not yet written when the same task's next state comes is replaced by it:
    a task that ends before its STARTED went out skips that write. `run()` runs the domains'
    writing loops, a service of the worker; `flush()` waits for everything queued to be
    written.
    """

    def __init__(self, store: ResultStore, ttl: float | None) -> None:
        self._store = store
        self._ttl = ttl
        self._domains: dict[Hashable, Batcher[TaskMeta, None]] = {}
        self._backlog = 0  # states queued and not written yet, in every domain
        self._later: dict[str, tuple[asyncio.TimerHandle, TaskMeta]] = {}  # `put`, not queued yet
        send, receive = anyio.create_memory_object_stream[Batcher[TaskMeta, None]](math.inf)
        self._new: MemoryObjectSendStream[Batcher[TaskMeta, None]] = send
        self._to_serve: MemoryObjectReceiveStream[Batcher[TaskMeta, None]] = receive

    def put(self, meta: TaskMeta) -> None:
        timer = asyncio.get_running_loop().call_later(STARTED_AFTER, self._queue, meta)
        self._later[meta.task_id] = (timer, meta)

    async def write(self, meta: TaskMeta) -> None:
        await self._queue(meta).wait()

    async def record(self, meta: TaskMeta, *, wait: bool, acked: bool) -> Written | None:
        if wait or self._backlog >= MAX_BACKLOG or (acked and not self._store.spreads_writes):
            await self.write(meta)
            return None
        written = self._queue(meta)
        return written if acked else None

    def _queue(self, meta: TaskMeta) -> Written:
        later = self._later.pop(meta.task_id, None)
        if later is not None:
            later[0].cancel()
        domain = self._store.write_domain(meta.task_id)
        batches = self._domains.get(domain)
        if batches is None:
            batches = self._domains[domain] = Batcher(self._store_all, served=True)
            self._new.send_nowait(batches)
        self._backlog += 1
        return batches.put(meta)

    async def flush(self) -> None:
        """Return once every state queued so far is written (or failed to be)."""
        for _, meta in list(self._later.values()):
            self._queue(meta)
        for batches in list(self._domains.values()):
            await batches.drain()

    async def run(self) -> None:
        async with anyio.create_task_group() as loops:
            async for batches in self._to_serve:
                loops.start_soon(batches.serve)

    async def _store_all(self, metas: list[TaskMeta]) -> None:
        latest = {meta.task_id: meta for meta in metas}  # each task's last state, in order
        try:
            await self._store.set_states(list(latest.values()), self._ttl)
        except Exception:
            logger.exception("Could not record %d task state(s)", len(latest))
            raise
        finally:
            self._backlog -= len(metas)
