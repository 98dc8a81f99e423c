"""The consuming side of the Redis broker: a consumer of the queues' groups, its
deliveries and its wake-ups. `redis.lua` has the scripts; `redis.py` the broker.

A consumer claims with one script per queue once a quarter of its prefetch is free: due
delayed messages move into their streams, expired leases of other consumers are taken
over, and new entries are read highest band first, as many as the queue's share of the
free prefetch. Its own expired leases it takes back only when they are still expired a
whole maintenance interval later (see `claim` in `redis.lua`). Acks of one event-loop turn
share a round trip; an early ack (`ack_before_run`) costs no task of its own: the batch's
flush frees its prefetch slot once Redis has answered. An early ack alone is written at once,
in its task, its reply awaited behind (`ack_early`). A consumer of one queue that finds it
drained, or holds nothing after its acks, offers to be handed the next message; a publish
then leases it one and publishes it on the consumer's hand-over channel (`_Offers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError

from taskq.batching import Batcher
from taskq.brokers.base import Delivery
from taskq.errors import NotConnectedError
from taskq.redis_db import (
    TRANSIENT_ERRORS,
    Command,
    RetryBackoff,
    close_pubsub,
    read_pubsub,
    when_written,
)

if TYPE_CHECKING:
    from taskq.brokers.redis import RedisBroker

GROUP = "taskq"
CLAIM_FRACTION = 4  # a consumer claims once this fraction of its prefetch is free
MAX_MAINTENANCE_INTERVAL = 1.0  # seconds between looks at expired leases and due messages
MIN_MAINTENANCE_INTERVAL = 0.02
IDLE_MARKER_MS = 60_000
OFFER_MADE, OFFER_TAKEN_UP = 1, 2  # what "claim" did of the consumer's offer
# How long an offer to be handed the next message lasts (see "publish" in redis.lua). An idle
# consumer renews it with every claim (at least once a maintenance interval); one that has
# vanished without its connection closing is handed at most one message in that time.
OFFER_MS = 5_000
# A hand-over that a claim reports taken up is on the connection already: one that has not
# come within this many seconds was lost with it (its lease runs out).
HAND_OVER_TIMEOUT = 1.0
# Without a wake-up subscription (pub/sub lost), how often every queue is looked at.
DEAF_POLL_INTERVAL = 0.25
WAKEUPS_SUBSCRIBE_TIMEOUT = 2.0  # a subscription slower than this: poll meanwhile
# What a consumer that stops may meet: Redis unreachable, or the broker closed before it.
_GONE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, NotConnectedError)
_NOT_SUBSCRIBED: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, TimeoutError)
_SENT_AGAIN: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, NoScriptError)  # an ack's reply

logger = logging.getLogger("taskq.redis")


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class _Slots:
    """The consumer's unsettled deliveries, counted against its prefetch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._freed: anyio.Event | None = None

    @property
    def free(self) -> int:
        return self.size - self.used

    def release(self) -> None:
        self.used -= 1
        if self._freed is not None:
            self._freed.set()

    async def wait_free(self, count: int) -> None:
        while self.free < min(count, self.size):
            self._freed = anyio.Event()
            await self._freed.wait()


class RedisDelivery(Delivery):
    """A claimed stream entry, leased to its consumer until it is settled once."""

    __slots__ = ("_consumer", "_freed", "band", "count", "id", "written")
    LOST = _GONE

    def __init__(self, consumer: Consumer, queue: str, fields: list[Any]) -> None:
        band, self.id, body, deliveries, count = fields
        super().__init__(body, queue, int(deliveries))
        self.band = int(band)
        self.count = int(count)  # times delivered to the group: with the consumer, the lease token
        self._consumer = consumer
        self._freed = False  # its prefetch slot, by `hand_over`
        self.written: asyncio.Future[None] | None = None  # of an early ack: see `ack_before_run`

    async def ack_before_run(self) -> None:
        """Returns once the ack is written to the connection; its reply is awaited behind."""
        if self.settle_elsewhere():
            await self._consumer.ack_early(self)

    @property
    def token(self) -> list[Any]:
        return [self.band, self.id, self.count]

    async def _ack(self) -> None:
        await self._consumer.ack(self)

    async def _requeue(self, delay: float | None) -> None:
        await self._consumer.requeue([self], delay, delivered=True)

    async def _bury(self, reason: str) -> None:
        await self._consumer.bury(self, reason)

    async def _extend(self, seconds: float) -> None:
        await self._consumer.extend(self, seconds)

    @property
    def holds_slot(self) -> bool:
        return not self._freed

    def hand_over(self) -> None:
        if not self._freed and not self.settled:
            self._freed = True
            self._consumer.slots.release()

    async def _released(self) -> None:
        if not self._freed:
            self._freed = True
            self._consumer.slots.release()


class _Offers:
    """A consumer's offers to be handed the next message of a queue (see "publish" in
    redis.lua). Each keeps a place of the prefetch until its message comes or the offer is
    withdrawn: `standing` ones as far as the consumer knows, `coming` ones that a claim found
    taken up by a publisher (the message on its way)."""

    def __init__(self) -> None:
        self._standing: set[str] = set()
        self._coming: dict[str, list[float]] = {}  # queue -> when each was found taken up

    def __len__(self) -> int:
        return len(self._standing) + sum(map(len, self._coming.values()))

    def standing(self, queue: str) -> bool:
        return queue in self._standing

    def made(self, queue: str) -> None:
        self._standing.add(queue)

    def withdrawn(self, queue: str) -> None:
        self._standing.discard(queue)

    def taken_up(self, queue: str) -> None:
        self._standing.discard(queue)
        self._coming.setdefault(queue, []).append(time.monotonic())

    def arrived(self, queue: str) -> str | None:
        """A message handed over from `queue` came: which offer it was ("coming" or
        "standing"), or None for one that no place was kept for."""
        coming = self._coming.get(queue)
        if coming:
            coming.pop(0)
            return "coming"
        if queue in self._standing:
            self._standing.discard(queue)
            return "standing"
        return None

    def give_up_late(self) -> None:
        limit = time.monotonic() - HAND_OVER_TIMEOUT
        for coming in self._coming.values():
            coming[:] = [found for found in coming if found > limit]

    def clear(self) -> None:
        """The hand-over subscription is gone: so is what was on its way."""
        self._standing.clear()
        self._coming.clear()


class Consumer:
    """One `consume()` call: a consumer (named after host, pid and a random token) of the
    groups of its queues, holding at most `prefetch` unsettled deliveries."""

    def __init__(self, broker: RedisBroker, queues: list[str], prefetch: int) -> None:
        self.broker = broker
        self.queues = queues
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.slots = _Slots(prefetch)
        # Acks of one loop turn share a round trip per failure domain (see `failure_domain`):
        # acks waiting for a dead cluster master do not hold back those of other queues.
        self._acks: dict[str | None, Batcher[RedisDelivery, None]] = {}
        self._answers: set[asyncio.Task[None]] = set()  # of the acks written at once
        visibility = broker.options.visibility_timeout
        self.lease_ms = ms(visibility)
        self.interval = min(max(visibility / 4, MIN_MAINTENANCE_INTERVAL), MAX_MAINTENANCE_INTERVAL)
        self._candidates = set(queues)  # queues that may have something to claim
        self._due: dict[str, float] = {}  # the next delayed message of each queue (epoch s)
        self._suspects: dict[str, dict[bytes, float]] = {}  # own expired leases: first seen
        self._maintained_at = time.monotonic()
        self._rotation = 0
        self._refusals: dict[str, str] = {}  # each queue's last claim error, logged once
        self._offer_member = f"{self.lease_ms}:{GROUP}:{self.name}"
        self._offers = _Offers()
        self._wakeups: _Wakeups | None = None

    @property
    def _offer_ms(self) -> int:
        """How long an offer to be handed messages lasts; 0 (no offer) without the hand-over
        subscription: for a consumer of several queues (an offer keeps a place of the prefetch
        that only a claim of its own queue can take back), or on a cluster (where a script
        cannot tell whether anybody listens)."""
        wakeups = self._wakeups
        return OFFER_MS if wakeups is not None and wakeups.hands_over else 0

    async def deliveries(self) -> AsyncGenerator[Delivery, None]:
        channels = {self.broker.keys(q).channel.encode(): q for q in self.queues}
        hand_overs = {}
        if len(self.queues) == 1 and not self.broker.settings.cluster:
            [queue] = self.queues
            hand_overs = {self.broker.keys(queue).hand_over_channel(self.name).encode(): queue}
        wakeups = self._wakeups = _Wakeups(self.broker, channels, hand_overs)
        pending: deque[RedisDelivery] = deque()
        backoff = RetryBackoff()
        try:
            while True:
                await self.slots.wait_free(max(1, self.slots.size // CLAIM_FRACTION))
                try:
                    pending.extend(await self._next_batch(wakeups))
                except TRANSIENT_ERRORS as exc:
                    self.broker.connection.outage.failed("consuming", exc)
                    await backoff.sleep()
                    continue
                if backoff.failures:
                    self.broker.connection.outage.over()
                    backoff = RetryBackoff()
                while pending:
                    yield pending.popleft()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop(list(pending), wakeups)

    async def _next_batch(self, wakeups: _Wakeups) -> list[RedisDelivery]:
        """Claim from the queues that may have messages; sleep once none may.

        A queue leaves the candidates when a claim gets fewer messages than it asked for,
        which also set the queue's idle marker: from then on a publish wakes us, so sleeping
        loses nothing. A wake-up is claimed from at once, without a second look at pub/sub:
        on an idle worker that look was a round of redis-py on every task's path.
        """
        await wakeups.open()
        if not wakeups.hands_over:
            self._offers.clear()
        self._refresh_candidates()
        if not self._claimable():
            self._candidates |= await wakeups.wait(self.interval)
        elif self._candidates:
            self._candidates |= await wakeups.wait(0)
        else:
            self._candidates |= await wakeups.wait(self._idle_timeout())
            self._refresh_candidates()
        handed = await self._take_handed(wakeups.handed())
        if self._candidates and self._claimable():
            return handed + await self._claim()
        return handed

    async def _take_handed(self, handed: list[tuple[str, bytes]]) -> list[RedisDelivery]:
        """The messages handed over by publishers (see `_offer_ms`) in the places their offers
        kept. One that came without (an offer whose ack seemed to fail) is kept if there is
        room, else given back. One whose offer a claim found taken up makes its queue a
        candidate again: that claim took one message less."""
        taken, extra = [], []
        for delivery in self._deliveries_of(handed):
            offer = self._offers.arrived(delivery.queue)
            if offer == "coming":
                self._candidates.add(delivery.queue)
            if offer is None and self.slots.free <= 0:
                extra.append(delivery)
            else:
                taken.append(delivery)
                self.slots.used += 1
        if extra:
            await self.requeue(extra, None, delivered=False)
        return taken

    def _deliveries_of(self, handed: list[tuple[str, bytes]]) -> list[RedisDelivery]:
        """The deliveries of hand-over payloads: "<band>:<id>:<deliveries>:<count>:<envelope>"."""
        deliveries = []
        for queue, payload in handed:
            parts = payload.split(b":", 4)
            if len(parts) != 5:
                logger.error("Ignored a hand-over on queue %r that is not one: %r", queue, payload)
                continue
            band, entry_id, delivered, count, body = parts
            deliveries.append(RedisDelivery(self, queue, [band, entry_id, body, delivered, count]))
        return deliveries

    def _claimable(self) -> bool:
        """Whether a claim may take anything: a place of the prefetch that no offer keeps, or
        one an offer of its queue keeps (the claim takes it back). Else the places are kept
        for messages handed over on their way: the consumer waits for them."""
        return self.slots.free > len(self._offers) or self._offers.standing(self.queues[0])

    def _refresh_candidates(self) -> None:
        now = time.monotonic()
        if now - self._maintained_at >= self.interval:
            self._maintained_at = now
            self._candidates.update(self.queues)
        wall = time.time()
        self._candidates.update(queue for queue, due in self._due.items() if due <= wall)
        self._offers.give_up_late()

    def _idle_timeout(self) -> float:
        timeout = self.interval - (time.monotonic() - self._maintained_at)
        if self._due:
            timeout = min(timeout, min(self._due.values()) - time.time())
        return max(timeout, 0.0)

    async def _claim(self) -> list[RedisDelivery]:
        """Claim each candidate queue's share of the prefetch that no offer keeps; a queue
        with a standing offer also the place that offer keeps (see "claim" in redis.lua)."""
        candidates = [q for q in self.queues if q in self._candidates]
        shares = dict(self._shares(candidates, self.slots.free - len(self._offers)))
        limits = [
            (queue, shares.get(queue, 0) + self._offers.standing(queue))
            for queue in candidates
            if queue in shares or self._offers.standing(queue)
        ]
        if not limits:
            return []
        now_ms = ms(time.time())
        commands = [
            self.broker.script(
                "claim",
                queue,
                [
                    GROUP,
                    self.name,
                    limit,
                    self.lease_ms,
                    now_ms,
                    IDLE_MARKER_MS,
                    self._offer_ms,
                    self._offer_member,
                    int(self._offers.standing(queue)),
                    *self._confirmed(queue),
                ],
            )
            for queue, limit in limits
        ]
        # Shielded: a claim whose result we dropped would sit leased for the whole timeout.
        with anyio.CancelScope(shield=True):
            results = await self.broker.send_apart([q for q, _ in limits], commands)
        unreachable = [result for result in results if isinstance(result, TRANSIENT_ERRORS)]
        if len(unreachable) == len(results):
            raise unreachable[0]
        batch: list[RedisDelivery] = []
        for (queue, limit), result in zip(limits, results, strict=True):
            if isinstance(result, TRANSIENT_ERRORS):  # claimed again at the next maintenance
                self._candidates.discard(queue)
                self.broker.connection.outage.failed(f"consuming from {queue!r}", result)
            elif isinstance(result, Exception):
                self._unclaimable(queue, result)
            else:
                batch += self._claimed(queue, limit, result)
        batch.sort(key=lambda delivery: -delivery.band)
        self.slots.used += len(batch)
        return batch

    def _shares(self, queues: list[str], free: int) -> list[tuple[str, int]]:
        """Split the free prefetch among `queues`; the remainder rotates between rounds."""
        base, extra = divmod(max(free, 0), len(queues))
        start = self._rotation % len(queues)
        self._rotation += 1
        favoured = set((queues[start:] + queues[:start])[:extra])
        shares = [(queue, base + (queue in favoured)) for queue in queues]
        return [(queue, share) for queue, share in shares if share > 0]

    def _claimed(self, queue: str, limit: int, result: list[Any]) -> list[RedisDelivery]:
        next_due, suspects, flat, buried, offer = result
        self._refusals.pop(queue, None)
        if buried:
            logger.error("Dead-lettered %d malformed entries of queue %r", buried, queue)
        if next_due:
            self._due[queue] = float(next_due) / 1000
        else:
            self._due.pop(queue, None)
        seen = self._suspects.get(queue, {})
        now = time.monotonic()
        self._suspects[queue] = {member: seen.get(member, now) for member in suspects}
        if offer == OFFER_TAKEN_UP:
            self._offers.taken_up(queue)
            self._candidates.discard(queue)
        else:
            (self._offers.made if offer == OFFER_MADE else self._offers.withdrawn)(queue)
            if len(flat) // 5 + buried < limit:
                self._candidates.discard(queue)
        return [RedisDelivery(self, queue, flat[i : i + 5]) for i in range(0, len(flat), 5)]

    def _unclaimable(self, queue: str, error: Exception) -> None:
        """A claim that Redis refused (a key of the queue that is not of taskq's making):
        logged once per distinct error, and tried again at the next maintenance round."""
        self._candidates.discard(queue)
        if self._refusals.get(queue) != str(error):
            self._refusals[queue] = str(error)
            logger.error("Cannot claim from queue %r: Redis refused (%s)", queue, error)

    def _confirmed(self, queue: str) -> list[bytes]:
        """Own expired leases seen for a whole interval: the tasks are no longer ours."""
        limit = time.monotonic() - self.interval
        return [member for member, seen in self._suspects.get(queue, {}).items() if seen <= limit]

    async def ack(self, delivery: RedisDelivery) -> None:
        await self._ack_batcher(delivery.queue).submit(delivery)

    async def ack_early(self, delivery: RedisDelivery) -> None:
        """Ack `delivery` (marked settled); return once the ack is written. Alone (no batch
        of acks open or flushing, no other written this way awaiting its reply) it is written
        here and now, and its reply awaited by a task of its own: a loop turn each way less
        on the round trip of an idle worker. Else it joins the acks of this loop turn, flushed
        by a task if it opens the batch, and the wait ends once they are written (or over,
        which is also how a connection that tells no writes, or an error, ends it)."""
        acks = self._ack_batcher(delivery.queue)
        if acks.idle and not self._answers and self.broker.writes_at_once:
            offered = self._offers.standing(delivery.queue)
            commands = self._per_queue("ack", [delivery], self._ack_offers([delivery]))
            try:
                reply = await self.broker.write_at_once(commands[0])
            except TRANSIENT_ERRORS:  # not written: the batch below retries, offer included
                if not offered:
                    self._offers.withdrawn(delivery.queue)
            else:
                answer = asyncio.get_running_loop().create_task(
                    self._answered(commands, reply, delivery.queue)
                )
                self._answers.add(answer)
                answer.add_done_callback(self._answers.discard)
                return
        delivery.written = asyncio.get_running_loop().create_future()
        acks.post(delivery)
        await delivery.written

    async def _answered(self, commands: list[Command], reply: Awaitable[Any], queue: str) -> None:
        """The reply of an ack written at once; sent again, with retries, if it did not come
        or the script was not loaded. Then the ack's prefetch slot is free."""
        try:
            try:
                await reply
            except _SENT_AGAIN:
                await self.broker.run(commands, "acknowledging")
        except Exception as exc:
            logger.warning("Lost the settlement of a message from %r (%r)", queue, exc)
        finally:
            self.slots.release()

    def _ack_batcher(self, queue: str) -> Batcher[RedisDelivery, None]:
        domain = self.broker.failure_domain(queue)
        acks = self._acks.get(domain)
        if acks is None:
            acks = self._acks[domain] = Batcher(self._flush_acks)
        return acks

    async def _flush_acks(self, deliveries: list[RedisDelivery]) -> None:
        """Send the acks; then settle the early ones, which nobody awaits past their write:
        an error is raised to one still waiting, logged for the others (the message comes
        back when its lease runs out), and each frees its prefetch slot."""
        try:
            offers = self._ack_offers(deliveries)
            with when_written(partial(_tell_written, deliveries)):
                await self.broker.run(self._per_queue("ack", deliveries, offers), "acknowledging")
        except Exception as exc:
            for delivery in deliveries:
                written = delivery.written
                if written is None:
                    continue
                if written.done() or isinstance(exc, RedisDelivery.LOST):
                    logger.warning(
                        "Lost the settlement of a message from %r (%r)", delivery.queue, exc
                    )
                else:
                    written.set_exception(exc)
            raise
        finally:
            _tell_written(deliveries)  # the wait ends, whatever became of the write
            for delivery in deliveries:
                if delivery.written is not None:
                    self.slots.release()

    def _ack_offers(self, acks: list[RedisDelivery]) -> Callable[[str], list[Any]]:
        """The "ack" script's offer arguments for each queue. Acks that leave the consumer
        holding nothing offer to be handed the next message of their queues, as a claim that
        finds a queue empty does: a worker taking one task at a time need not claim each."""
        holding = sum(delivery.holds_slot for delivery in acks)
        offering = self._offer_ms if self.slots.used == holding else 0

        def offer(queue: str) -> list[Any]:
            if not offering or self._offers.standing(queue) or len(self._offers) >= self.slots.size:
                return [0, self._offer_member]
            self._offers.made(queue)
            return [offering, self._offer_member]

        return offer

    async def requeue(
        self, deliveries: list[RedisDelivery], delay: float | None, *, delivered: bool
    ) -> None:
        await self.broker.run(self._requeue(deliveries, delay, delivered), "requeueing")

    async def bury(self, delivery: RedisDelivery, reason: str) -> None:
        commands = self._per_queue("bury", [delivery], [reason, time.time()])
        await self.broker.run(commands, "dead-lettering")

    async def extend(self, delivery: RedisDelivery, seconds: float) -> None:
        commands = self._per_queue("extend", [delivery], [ms(seconds)])
        await self.broker.run(commands, "renewing a lease")

    def _requeue(
        self, deliveries: list[RedisDelivery], delay: float | None, delivered: bool
    ) -> list[Command]:
        due = ms(time.time() + delay) if delay else 0
        uncount = 0 if delivered else 1

        def item(delivery: RedisDelivery) -> list[Any]:
            return [*delivery.token, delivery.delivery_count - uncount]

        return self._per_queue("requeue", deliveries, [due], item, wake=True)

    def _per_queue(
        self,
        name: str,
        deliveries: list[RedisDelivery],
        extra: Sequence[Any] | Callable[[str], Sequence[Any]] = (),
        item: Callable[[RedisDelivery], list[Any]] = lambda delivery: delivery.token,
        *,
        wake: bool = False,
    ) -> list[Command]:
        """Calls of script `name`, one per queue, over each queue's `deliveries`."""
        by_queue: dict[str, list[Any]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).extend(item(delivery))
        commands = []
        for queue, items in by_queue.items():
            channel = [self.broker.keys(queue).channel] if wake else []
            before = extra(queue) if callable(extra) else extra
            args = [GROUP, self.name, *channel, *before, *items]
            commands.append(self.broker.script(name, queue, args))
        return commands

    async def _stop(self, unyielded: list[RedisDelivery], wakeups: _Wakeups) -> None:
        """Give back what was claimed but never yielded, and leave the groups where we hold
        nothing, in one round trip: no retries, a stopping worker does not wait for Redis."""
        unyielded += self._deliveries_of(await wakeups.withdraw(self._offer_member))
        await wakeups.close()
        unyielded = [delivery for delivery in unyielded if delivery.settle_elsewhere()]
        commands = self._requeue(unyielded, None, delivered=False)
        commands += [self.broker.script("forget", q, [GROUP, self.name]) for q in self.queues]
        try:
            await self.broker.send(commands)
        except _GONE as exc:
            logger.warning("Consumer %s stopped without Redis (%s)", self.name, exc)


def _tell_written(deliveries: list[RedisDelivery]) -> None:
    for delivery in deliveries:
        written = delivery.written
        if written is not None and not written.done():
            written.set_result(None)


class _Wakeups:
    """The consumer's subscription to its queues' wake-up channels and its own hand-over
    channels (see `Consumer._offer_ms`). Without one (it cannot be made, or was lost) the
    consumer polls: every queue may have news every `DEAF_POLL_INTERVAL`, and subscribing is
    tried again with backoff, so claiming never waits for pub/sub."""

    def __init__(
        self, broker: RedisBroker, channels: dict[bytes, str], hand_overs: dict[bytes, str]
    ) -> None:
        self._broker = broker
        self._channels = channels
        self._hand_overs = hand_overs
        self._handed: list[tuple[str, bytes]] = []
        self._pubsub: PubSub | None = None
        self._backoff = RetryBackoff()
        self._retry_at = 0.0

    async def open(self) -> None:
        """Subscribe, and wait until Redis confirms: a wake-up after this reaches us."""
        if self._pubsub is not None or time.monotonic() < self._retry_at:
            return
        pubsub = self._broker.connection.pubsub()
        try:
            with anyio.fail_after(WAKEUPS_SUBSCRIBE_TIMEOUT):
                await pubsub.subscribe(*self._channels, *self._hand_overs)
                confirmed = 0
                while confirmed < len(self._channels) + len(self._hand_overs):
                    message = await pubsub.get_message(timeout=WAKEUPS_SUBSCRIBE_TIMEOUT)
                    confirmed += message is not None and message["type"] == "subscribe"
        except _NOT_SUBSCRIBED as exc:
            await close_pubsub(pubsub)
            self._lost("subscribing to wake-ups", exc)
            return
        except BaseException:
            await close_pubsub(pubsub)
            raise
        self._pubsub = pubsub
        if self._backoff.failures:
            self._broker.connection.outage.over()
            self._backoff = RetryBackoff()

    async def wait(self, timeout: float) -> set[str]:
        """The queues woken within `timeout` seconds (and any woken since the last look);
        without a subscription, every queue after at most `DEAF_POLL_INTERVAL`."""
        if self._pubsub is None:
            await anyio.sleep(min(timeout, DEAF_POLL_INTERVAL))
            return set(self._channels.values())
        woken: set[str] = set()
        try:
            reply = await read_pubsub(self._pubsub, timeout)
            while reply is not None:
                if isinstance(reply, list) and reply[0] == b"message":
                    self._received(reply[1], reply[2], woken)
                reply = await read_pubsub(self._pubsub, 0)
        except TRANSIENT_ERRORS as exc:
            await self.close()
            self._lost("listening for wake-ups", exc)
            return set(self._channels.values())
        return woken

    def _received(self, channel: bytes, payload: bytes, woken: set[str]) -> None:
        queue = self._hand_overs.get(channel)
        if queue is None:
            woken.add(self._channels[channel])
        elif payload:  # empty: the end of hand-overs, see `withdraw`
            self._handed.append((queue, payload))

    @property
    def hands_over(self) -> bool:
        """Whether publishers may hand this consumer messages: it listens on its channels."""
        return self._pubsub is not None and bool(self._hand_overs)

    def handed(self) -> list[tuple[str, bytes]]:
        """The messages handed over since the last call: (queue, payload)."""
        handed, self._handed = self._handed, []
        return handed

    async def withdraw(self, offer_member: str) -> list[tuple[str, bytes]]:
        """End the consumer's offers, and return the messages handed over before that
        ended: each channel's last message is the "withdraw" script's empty one. A
        connection lost meanwhile loses what was still to be read: its leases run out."""
        if not self.hands_over:
            return self.handed()
        commands = [
            self._broker.script("withdraw", queue, [offer_member, channel])
            for channel, queue in self._hand_overs.items()
        ]
        ending = set(self._hand_overs)
        with anyio.move_on_after(WAKEUPS_SUBSCRIBE_TIMEOUT):
            try:
                await self._broker.send(commands)
                while ending and self._pubsub is not None:
                    reply = await read_pubsub(self._pubsub, None)
                    if isinstance(reply, list) and reply[0] == b"message":
                        if reply[1] in ending and not reply[2]:
                            ending.discard(reply[1])
                        else:
                            self._received(reply[1], reply[2], set())
            except TRANSIENT_ERRORS as exc:
                logger.warning("Stopped listening for hand-overs without Redis (%s)", exc)
        return self.handed()

    def _lost(self, what: str, error: Exception) -> None:
        self._broker.connection.outage.failed(what, error)
        self._retry_at = time.monotonic() + self._backoff.next_delay()

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await close_pubsub(pubsub)
