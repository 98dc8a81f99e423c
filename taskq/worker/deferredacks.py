"""`acks_late` acks that wait for their task's state to be stored, off the task loops.

A task loop hands over the delivery of an `acks_late` task whose state is still being
written and goes on to its next job. The delivery stays held by the worker (its lease
renewed, a warm shutdown waiting for it) until it is acked, once the write is done: a worker
killed before that leaves it to be delivered again. A write that failed makes it unhandled
(dead-lettered with the reason), as when the task loop itself waited for the write.

How many wait is bounded twice: by the prefetch (a delivery waiting for its ack is unsettled)
and by the state writer's backlog (past `MAX_BACKLOG` states not written yet, a task loop
waits for its task's write itself, on its slot).

The deliveries of one batch of states wait in one task, and their acks go out together, so
that the broker batches them as it does the task loops' own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from taskq.brokers.base import Delivery
from taskq.execution.job import Written


class DeferredAcks:
    def __init__(
        self,
        release: Callable[[Delivery], None],
        unhandled: Callable[[Delivery, Exception], Awaitable[None]],
    ) -> None:
        self._release = release  # the worker holds the delivery no more
        self._unhandled = unhandled
        self.deliveries: set[Delivery] = set()  # waiting for their ack
        self._by_write: dict[int, list[Delivery]] = {}  # by id() of the write they wait for
        self._group: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        """Where the waits run, until cancelled (with the task loops: after the drain of a
        warm shutdown, at once by a cold one, which leaves their deliveries unacked)."""
        async with anyio.create_task_group() as self._group:
            await anyio.sleep_forever()

    def add(self, delivery: Delivery, written: Written) -> None:
        """Ack `delivery` once `written` is stored."""
        assert self._group is not None
        self.deliveries.add(delivery)
        waiting = self._by_write.get(id(written))
        if waiting is None:
            waiting = self._by_write[id(written)] = []
            self._group.start_soon(self._ack_after, written, waiting)
        waiting.append(delivery)

    async def _ack_after(self, written: Written, deliveries: list[Delivery]) -> None:
        error: Exception | None = None
        try:
            await written.wait()
        except Exception as exc:
            error = exc
        del self._by_write[id(written)]
        async with anyio.create_task_group() as acks:
            for delivery in deliveries[:-1]:
                acks.start_soon(self._settle, delivery, error)
            await self._settle(deliveries[-1], error)  # the others join its round trip

    async def _settle(self, delivery: Delivery, error: Exception | None) -> None:
        try:
            if error is None:
                try:
                    await delivery.ack()
                except Exception as exc:
                    error = exc
            if error is not None:
                await self._unhandled(delivery, error)
        finally:
            self.deliveries.discard(delivery)
            self._release(delivery)
