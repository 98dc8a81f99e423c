"""`acks_late` acks that wait for their task's state to be stored, off the task loops.

Where the store spreads its writes over domains (`ResultStore.spreads_writes`) or the broker
its queues over nodes (`Broker.spreads_queues`), as on Redis Cluster, a task loop hands over
the delivery of an `acks_late` task that ran and goes on to its next job, so a node that is
lost (holding up that state's write, or that queue's ack) does not take every slot. The
delivery's place in the prefetch is freed then (`Delivery.hand_over`; on Redis), so the
consumer goes on claiming for the queues on live nodes. On one server the loop acks, after
waiting for the write, itself: a stalled server stalls everything anyway, and acking in the
loop costs less (measured: 86 against 134 µs of worker CPU a task on the Redis drain of
`acks_late` no-op tasks). The delivery stays held by the worker (its lease renewed, a warm
shutdown waiting for it) until it is acked: a worker killed before that leaves it to be
delivered again. A write that failed makes it unhandled (dead-lettered with the reason), as
when the task loop itself waited for the write.

How many wait is bounded by the state writer's backlog (past `MAX_BACKLOG` states not
written yet, a task loop waits for its task's write itself, on its slot) and, for acks
waiting on a lost node, by what the consumer could claim from that node before it was lost.

The deliveries of one batch of states wait in one task, and their acks go out together, so
that the broker batches them as it does the task loops' own. Those are plain asyncio tasks:
one started by an anyio task group costs five times as much (~50 µs), as much as the rest of
a no-op task's run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio

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
        self._waits: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until cancelled (with the task loops: after the drain of a warm shutdown, at once
        by a cold one), when the waits left are cancelled: their deliveries stay unacked."""
        try:
            await anyio.sleep_forever()
        finally:
            for wait in self._waits:
                wait.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*self._waits, return_exceptions=True)

    def add(self, delivery: Delivery, written: Written | None) -> None:
        """Ack `delivery` once `written` is stored; its place in the prefetch is free now."""
        self.deliveries.add(delivery)
        delivery.hand_over()
        waiting = self._by_write.get(id(written))
        if waiting is None:
            waiting = self._by_write[id(written)] = []
            wait = asyncio.get_running_loop().create_task(self._ack_after(written, waiting))
            self._waits.add(wait)
            wait.add_done_callback(self._waits.discard)
        waiting.append(delivery)

    async def _ack_after(self, written: Written | None, deliveries: list[Delivery]) -> None:
        error: Exception | None = None
        try:
            if written is not None:
                await written.wait()
        except Exception as exc:
            error = exc
        del self._by_write[id(written)]
        if len(deliveries) == 1:
            await self._settle(deliveries[0], error)
        else:
            await asyncio.gather(*(self._settle(delivery, error) for delivery in deliveries))

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
