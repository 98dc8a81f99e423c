"""A broadcast task's delivery (`broadcast=True`): each worker consuming the task's queue
runs the message it heard on the control channel.

No broker holds it: there is nothing to ack or to renew. Given back before it started (a
warm shutdown, a rate limit's wait cut short) it is dropped, with a warning, since no other
worker would take it; dead-lettered, it is kept in its queue's dead letters with the reason.
"""

from __future__ import annotations

import logging

from taskq.brokers.base import Broker, Delivery
from taskq.message import peek_id

logger = logging.getLogger("taskq.worker")


class BroadcastDelivery(Delivery):
    __slots__ = ("_broker",)

    def __init__(self, body: bytes, queue: str, broker: Broker) -> None:
        super().__init__(body, queue, delivery_count=1)
        self._broker = broker

    async def _ack(self) -> None:
        """Nothing holds it."""

    async def _requeue(self, delay: float | None) -> None:
        logger.warning("Dropped broadcast task %s: given back before it ran", peek_id(self.body))

    async def _bury(self, reason: str) -> None:
        await self._broker.add_dead_letter(self.queue, self.body, reason)

    async def _extend(self, seconds: float) -> None:
        """No lease to renew."""

    async def _released(self) -> None:
        """No consumer's prefetch to free."""
