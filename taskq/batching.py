"""Round trips shared by concurrent callers: the one batching primitive of taskq.

Redis commands (state writes, acks, chord counts, subscriptions), a worker's lookups of stored
revocations and its task-state writes all use it. Imports nothing of taskq.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Batch(Generic[T, R]):
    items: list[T] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: R | None = None
    error: Exception | None = None

    async def wait(self) -> R:
        """The flush's result once it has run; its error, raised, if it failed."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set when done without an error


class Batcher(Generic[T, R]):
    """`await submit(item)`: the items submitted while the previous flush is in flight, and in
    the event-loop turn after, go out in one `flush(items)`, whose result (or error) every
    submitter of the batch gets. Batches flush one at a time, in order.

    The first submitter of a batch runs its flush (shielded, since others wait on it). With
    `served=True` a service runs them instead, `serve()`, and `put(item)` adds an item
    without waiting for anything (a worker's task states, written behind its task loops).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[R]], *, served: bool = False) -> None:
        self._flush = flush
        self._served = served
        self._open: Batch[T, R] | None = None
        self._running: Batch[T, R] | None = None
        self._lock: anyio.Lock | None = None
        self._opened: anyio.Event | None = None

    @property
    def pending(self) -> int:
        """Items waiting for a flush that has not begun."""
        return len(self._open.items) if self._open is not None else 0

    def put(self, item: T) -> Batch[T, R]:
        """Add `item` to the open batch (opening one); its flush is the caller's, or the
        service's, to run."""
        batch = self._open
        if batch is None:
            batch = self._open = Batch()
            if self._opened is not None:
                self._opened.set()
        batch.items.append(item)
        return batch

    async def submit(self, item: T) -> R:
        opens = self._open is None
        batch = self.put(item)
        if opens and not self._served:
            with anyio.CancelScope(shield=True):
                await self._run(batch)
        return await batch.wait()

    async def serve(self) -> None:
        """Run batches as they open, for ever (for `served=True`)."""
        while True:
            if self._open is None:
                self._opened = anyio.Event()
                await self._opened.wait()
            batch = self._open
            assert batch is not None
            with anyio.CancelScope(shield=True):  # its submitters are waiting on it
                await self._run(batch)

    async def drain(self) -> None:
        """Return once everything added so far is flushed (or failed to be)."""
        for batch in (self._running, self._open):
            if batch is not None:
                await batch.done.wait()

    async def _run(self, batch: Batch[T, R]) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        try:
            async with self._lock:
                if not self._served:
                    await anyio.lowlevel.checkpoint()  # the other submitters of this turn join
                self._open = None
                self._running = batch
                batch.result = await self._flush(batch.items)
        except Exception as exc:
            batch.error = exc
        finally:
            self._running = None
            batch.done.set()
