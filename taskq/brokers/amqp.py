"""The RabbitMQ broker, on aio-pika's robust connection and channels.

Publishing goes through one channel in confirm mode: a publish returns once RabbitMQ has
confirmed the (persistent) message, and raises when it cannot have it: unroutable, refused,
or no connection within `publish_timeout`. Every publish (`publish_many`, a worker's dead
letters and parked messages) sends its messages in one write and then awaits their confirms
together; those made while another is in flight go out together in the next turn of the
loop (`TurnBatcher`, as on Redis). amqp_publisher.py encodes the frames and tracks the
confirms (not aiormq's `basic_publish`). Exchanges and queues are declared on first use
(amqp_topology.py lists them all); each `consume()` has a channel of its own
(amqp_consumer.py).

A message due later waits in a delay bucket of its queue, on RabbitMQ, never in a worker.
Dead letters are messages in `<queue>.dlq` carrying the reason in the `taskq-reason` header
(or, when RabbitMQ dead-lettered them itself, in `x-death`). Listing them takes them with
basic.get and no ack on a channel of its own, and closing that channel puts them back in
their order; so does removing some by id, after acking those.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any, TypeVar, cast

import aiormq
import anyio
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    ExchangeType,
)
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError
from anyio.streams.memory import MemoryObjectSendStream

from taskq.batching import TurnBatcher
from taskq.brokers.amqp_connection import open_robust_connection
from taskq.brokers.amqp_consumer import (
    DELIVERIES_HEADER,
    ETA_HEADER,
    Consumer,
    int_header,
    to_milliseconds,
    winding_down,
)
from taskq.brokers.amqp_events import EventStream
from taskq.brokers.amqp_publisher import Properties, Publish, Publisher
from taskq.brokers.amqp_topology import (
    OPTIONS as AMQP_OPTIONS,
)
from taskq.brokers.amqp_topology import (
    AMQPConfig,
    bucket_queue,
    bucket_ttl,
    bucket_ttls,
    declare_bucket,
    declare_exchange,
    declare_queue,
)
from taskq.brokers.base import (
    Broadcasts,
    Broker,
    DeadLetter,
    Delivery,
    Scheduled,
    dead_letter_queue,
)
from taskq.config import QUEUE_OPTIONS, Settings
from taskq.errors import (
    BrokerUnavailable,
    ConfigurationError,
    NotConnectedError,
    UnsupportedError,
)
from taskq.message import Message
from taskq.tls import TLSOptions
from taskq.urls import masked_url

REASON_HEADER = "taskq-reason"
FAILED_AT_HEADER = "taskq-failed-at-ms"
JSON_CONTENT_TYPE = "application/json"
PERSISTENT = 2
SUBSCRIBER_BUFFER = 10_000
RELINK_PAUSE = 0.05

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One message ready to go, with the declaration it needs first."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    declare: Callable[[], Awaitable[object]]
    mandatory: bool = True

    @property
    def publish(self) -> Publish:
        destination = (self.exchange, self.routing_key, self.mandatory, self.properties)
        return destination, self.body


def _properties(priority: int | None, headers: dict[str, Any]) -> Properties:
    return (
        Properties(JSON_CONTENT_TYPE, PERSISTENT, priority, headers)
        if headers
        else _plain(priority)
    )


@cache
def _plain(priority: int | None) -> Properties:
    return Properties(JSON_CONTENT_TYPE, PERSISTENT, priority)


class AMQPBroker(Broker):
    """A broker on RabbitMQ: `amqp://user:pass@host:port/vhost` or `amqps://`.

    Transport options (`broker_transport_options`, all optional): `queue_max_priority`,
    `quorum_queues`, `delivery_limit`, `queue_arguments`, `bindings`, `exchange_types`,
    `publish_timeout`, `reconnect_interval`; see the README's RabbitMQ section.
    """

    OPTIONS = AMQP_OPTIONS
    QUEUE_OPTIONS = QUEUE_OPTIONS

    def __init__(self, url: str, conf: Settings) -> None:
        super().__init__(url, conf)
        self._url = url
        self._tls = TLSOptions.read(conf.broker_use_ssl, "broker_use_ssl", url)
        self._config = AMQPConfig.from_settings(self.transport, conf)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._publishing = Publisher()
        self._turns = TurnBatcher(self._send_all)
        self._queues: dict[str, AbstractQueue] = {}  # declared on the publishing channel
        self._exchanges: set[str] = set()
        self._held: Counter[str] = Counter()  # deliveries this process holds, per queue
        self._consumers: set[Consumer] = set()
        self._subscriptions: set[MemoryObjectSendStream[bytes]] = set()
        self._events = EventStream(
            url,
            self._config.default_exchange,
            conf.event_retention,
            reconnect_interval=self._config.reconnect_interval,
            timeout=self._config.publish_timeout,
        )

    async def connect(self) -> None:
        if self._connection is not None:
            return
        connection = await open_robust_connection(
            self._url,
            reconnect_interval=self._config.reconnect_interval,
            timeout=self._config.publish_timeout,
            ssl_context=None if self._tls is None else self._tls.context(),
        )
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            with winding_down(self._config.publish_timeout):
                await connection.close()
            raise
        self._connection, self._channel = connection, channel

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._queues.clear()
        self._exchanges.clear()
        for consumer in self._consumers:
            consumer.end()
        for subscription in self._subscriptions:
            subscription.close()
        await self._events.close()
        if connection is not None:
            with winding_down(self._config.publish_timeout):
                await connection.close()

    # -- publishing -----------------------------------------------------------------

    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        now = time.time()
        await self._publish(*[self._outgoing(message, queue, now) for message, queue in items])

    async def park(
        self, message: AbstractIncomingMessage, queue: str, due: float, deliveries: int
    ) -> None:
        """Publish a copy of `message` into `queue`'s delay bucket, to come back when `due`."""
        ttl = bucket_ttl(due - time.time())
        headers: dict[str, Any] = {ETA_HEADER: to_milliseconds(due)}
        if deliveries:
            headers[DELIVERIES_HEADER] = deliveries
        properties = _properties(message.priority, headers)
        bucket = partial(self._bucket, queue, ttl)
        await self._publish(
            _Outgoing("", bucket_queue(queue, ttl), message.body, properties, bucket)
        )

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        headers = {REASON_HEADER: reason, FAILED_AT_HEADER: to_milliseconds(time.time())}
        properties = _properties(None, headers)
        declare = partial(self._queue, queue)
        await self._publish(
            _Outgoing(self._config.dead_letter_exchange, queue, body, properties, declare)
        )

    async def broadcast(self, channel: str, payload: bytes) -> None:
        exchange = self._config.broadcast_exchange(channel)
        declare = partial(self._exchange, exchange, ExchangeType.FANOUT)
        # Not mandatory: a broadcast nobody listens to is simply gone, as with pub/sub.
        await self._publish(_Outgoing(exchange, "", payload, Properties(), declare, False))

    def _outgoing(self, message: Message, queue: str, now: float) -> _Outgoing:
        """Route a message: straight to its queue (or its delay bucket), or through an exchange."""
        body = self.options.encode(message)
        delay = message.eta - now if message.eta is not None else 0.0
        headers = {ETA_HEADER: to_milliseconds(message.eta)} if message.eta and delay > 0 else {}
        properties = _properties(message.priority, headers)
        default = self._config.default_exchange
        exchange = message.exchange or default
        routing_key = message.routing_key or queue
        if exchange != default or routing_key != queue:
            # Whichever queues it reaches, their consumers park it there until it is due.
            declare = partial(self._exchange, exchange)
            return _Outgoing(exchange, routing_key, body, properties, declare)
        if delay > 0:
            ttl = bucket_ttl(delay)
            bucket = partial(self._bucket, queue, ttl)
            return _Outgoing("", bucket_queue(queue, ttl), body, properties, bucket)
        return _Outgoing(default, queue, body, properties, partial(self._queue, queue))

    async def _publish(self, *outgoing: _Outgoing) -> None:
        """Publish and await the confirms; raise the first failure. Publishes made while
        others are in flight go out together, in the next turn of the loop (`TurnBatcher`)."""
        await self._turns.submit(outgoing)

    async def _send_all(self, outgoing: list[_Outgoing]) -> list[Exception | None]:
        """Send all in one write, then await their confirms together: each one's failure."""
        async with self._talking():
            for item in outgoing:
                await self._relinked(item.declare)
            confirmations = await self._relinked(partial(self._send, outgoing))
            return [await self._confirmed(confirmation) for confirmation in confirmations]

    async def _send(self, outgoing: list[_Outgoing]) -> list[asyncio.Future[Any]]:
        channel = cast(aiormq.Channel, await self._publisher().get_underlay_channel())
        return await self._publishing.send(channel, [item.publish for item in outgoing])

    async def _confirmed(self, confirmation: asyncio.Future[Any]) -> Exception | None:
        try:
            await confirmation
        except Exception as exc:
            error = self._explained(exc)
            error.__cause__ = exc
            return error
        return None

    @contextlib.asynccontextmanager
    async def _talking(self) -> AsyncIterator[None]:
        """Waits for the connection, bounds the exchange by `publish_timeout`, explains failures."""
        channel = self._publisher()
        try:
            async with asyncio.timeout(self._config.publish_timeout):  # cheaper than anyio's
                await channel.ready()
                yield
        except (TimeoutError, AMQPError, ChannelInvalidStateError) as exc:
            raise self._explained(exc) from exc

    def _explained(self, exc: Exception) -> Exception:
        """What a failure of RabbitMQ's, or of the link to it, means to the caller."""
        if isinstance(exc, PublishError):
            return ConfigurationError(
                f"RabbitMQ could route no message to a queue ({exc}): bind a queue to the "
                "exchange with `bindings` in broker_transport_options"
            )
        if isinstance(exc, DeliveryError):
            return ConnectionError(f"RabbitMQ refused the message ({exc})")
        if isinstance(exc, TimeoutError):
            return BrokerUnavailable(
                f"RabbitMQ at {masked_url(self._url)} did not answer within "
                f"{self._config.publish_timeout:g}s"
            )
        if isinstance(exc, AMQPError | ChannelInvalidStateError):
            return BrokerUnavailable(
                f"RabbitMQ at {masked_url(self._url)}: the connection failed ({exc})"
            )
        return exc

    async def _relinked(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation`, again while it finds its channel closed before sending anything:
        the robust connection has not noticed a lost link yet. `_talking` bounds the wait."""
        while True:
            try:
                return await operation()
            except ChannelInvalidStateError:
                await anyio.sleep(RELINK_PAUSE)
                await self._publisher().ready()

    # -- declarations (cached for the publishing channel) ----------------------------

    async def _queue(self, name: str) -> AbstractQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = await declare_queue(self._publisher(), self._config, name)
            self._queues[name] = queue
        return queue

    async def _bucket(self, queue: str, ttl: int) -> AbstractQueue:
        name = bucket_queue(queue, ttl)
        bucket = self._queues.get(name)
        if bucket is None:
            await self._queue(queue)
            bucket = await declare_bucket(self._publisher(), self._config, queue, ttl)
            self._queues[name] = bucket
        return bucket

    async def _exchange(self, name: str, kind: ExchangeType | None = None) -> None:
        if name not in self._exchanges:
            await declare_exchange(self._publisher(), self._config, name, kind)
            for queue in self._config.queues_bound_to(name):
                await self._queue(queue)
            self._exchanges.add(name)

    async def _with_buckets(self, queue: str) -> list[AbstractQueue]:
        """The queue's delay buckets, then the queue: a purge in this order misses nothing
        that a bucket hands back to the queue meanwhile."""
        buckets = [await self._bucket(queue, ttl) for ttl in bucket_ttls()]
        return [*buckets, await self._queue(queue)]

    # -- consuming ------------------------------------------------------------------

    async def _consume(self, names: list[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        consumer = Consumer(self, self._config, self._held, prefetch)
        self._consumers.add(consumer)
        try:
            async with self._talking():
                await consumer.start(self._connected(), names)
            while (delivery := await consumer.next()) is not None:
                yield delivery
        finally:
            self._consumers.discard(consumer)
            with winding_down(self._config.publish_timeout):
                await consumer.stop()

    def subscribe(self, channel: str) -> Broadcasts:
        return self._subscribe(channel)

    async def _subscribe(self, name: str) -> AsyncGenerator[bytes, None]:
        """A private, exclusive queue bound to the channel's fanout exchange."""
        channel = await self._open_channel()
        send, receive = anyio.create_memory_object_stream[bytes](SUBSCRIBER_BUFFER)
        self._subscriptions.add(send)
        try:
            exchange = self._config.broadcast_exchange(name)
            await declare_exchange(channel, self._config, exchange, ExchangeType.FANOUT)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, "")
            await queue.consume(partial(_offer, send), no_ack=True)
            async with receive:
                async for payload in receive:
                    yield payload
        finally:
            self._subscriptions.discard(send)
            with winding_down(self._config.publish_timeout):
                await channel.close()

    # Task events: a stream queue kept for `event_retention` seconds, on a connection of
    # its own (amqp_events.py).
    KEEPS_EVENTS = True

    async def publish_events(self, payload: bytes) -> None:
        await self._events.publish(payload)

    def read_events(self, since: float | None) -> Broadcasts:
        return self._events.read(since)

    # -- inspection -----------------------------------------------------------------

    async def queue_length(self, queue: str) -> int:
        """Ready in the queue and its delay buckets, plus what this process holds unacked:
        RabbitMQ reports other consumers' unacked messages only to its management plugin."""
        async with self._talking():
            queues = await self._relinked(partial(self._with_buckets, queue))
            ready = await self._relinked(partial(_ready, queues))
        return ready + self._held[queue]

    async def scheduled(self, queue: str, limit: int = 100) -> list[Scheduled]:
        raise UnsupportedError(
            "RabbitMQ cannot list the delayed messages without taking them from their delay"
            " buckets; scheduled_length (taskq status) counts them"
        )

    async def scheduled_length(self, queue: str) -> int:
        """Ready in the queue's delay buckets."""
        async with self._talking():
            *buckets, _ = await self._relinked(partial(self._with_buckets, queue))
            return await self._relinked(partial(_ready, buckets))

    async def purge(self, queue: str) -> int:
        async with self._talking():
            queues = await self._relinked(partial(self._with_buckets, queue))
            return await self._relinked(partial(_purged, queues))

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        async with self._dead_letter_queue(queue) as dead:
            messages: list[AbstractIncomingMessage] = []
            while len(messages) < limit and (message := await dead.get(fail=False)):
                messages.append(message)
        return [_as_dead_letter(queue, message) for message in messages]

    async def dead_letter_length(self, queue: str) -> int:
        async with self._dead_letter_queue(queue) as dead:
            return (await dead.declare()).message_count or 0

    async def remove_dead_letters(self, queue: str, ids: Sequence[str]) -> int:
        wanted, removed = set(ids), 0
        async with self._dead_letter_queue(queue) as dead:
            while wanted and (message := await dead.get(fail=False)):
                if _letter_id(message) in wanted:
                    wanted.discard(_letter_id(message))
                    await message.ack()
                    removed += 1
        return removed

    async def purge_dead_letters(self, queue: str) -> int:
        async with self._dead_letter_queue(queue) as dead:
            return (await dead.purge()).message_count or 0

    @contextlib.asynccontextmanager
    async def _dead_letter_queue(self, queue: str) -> AsyncIterator[AbstractQueue]:
        """`<queue>.dlq` on a channel of its own: closing it returns what it took unacked."""
        async with self._talking():
            await self._relinked(partial(self._queue, queue))
            channel = await self._relinked(self._open_channel)
            try:
                yield await channel.get_queue(dead_letter_queue(queue), ensure=False)
            finally:
                with winding_down(self._config.publish_timeout):
                    await channel.close()

    async def _open_channel(self) -> AbstractRobustChannel:
        return await self._connected().channel(publisher_confirms=False)

    def _connected(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise NotConnectedError("the AMQP broker is not connected: await connect() first")
        return self._connection

    def _publisher(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise NotConnectedError("the AMQP broker is not connected: await connect() first")
        return self._channel


async def _offer(send: MemoryObjectSendStream[bytes], message: AbstractIncomingMessage) -> None:
    # A subscriber SUBSCRIBER_BUFFER behind loses the newest; one that left, what comes after.
    with contextlib.suppress(
        anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
    ):
        send.send_nowait(message.body)


async def _ready(queues: list[AbstractQueue]) -> int:
    """Messages ready in these queues: RabbitMQ's count leaves out the unacked ones."""
    return sum([(await queue.declare()).message_count or 0 for queue in queues])


async def _purged(queues: list[AbstractQueue]) -> int:
    return sum([(await queue.purge()).message_count or 0 for queue in queues])


def _letter_id(message: AbstractIncomingMessage) -> str:
    return message.message_id or hashlib.sha256(message.body).hexdigest()[:32]


def _as_dead_letter(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    reason = headers.get(REASON_HEADER)
    failed_at_ms = int_header(headers, FAILED_AT_HEADER)
    if not isinstance(reason, str) or failed_at_ms is None:
        reason, failed_at = _death(headers)
    else:
        failed_at = failed_at_ms / 1000
    return DeadLetter(_letter_id(message), queue, reason, message.body, failed_at)


def _death(headers: dict[str, Any]) -> tuple[str, float]:
    """Why and when RabbitMQ itself dead-lettered a message (delivery limit, ...)."""
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    when = death.get("time") if isinstance(death, dict) else None
    reason = death.get("reason") if isinstance(death, dict) else None
    return (
        str(reason or "unknown"),
        when.timestamp() if isinstance(when, datetime) else 0.0,
    )
