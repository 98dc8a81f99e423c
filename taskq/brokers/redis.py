"""The Redis broker: one stream per priority band and queue, read through a consumer group.

A queue's keys share the hash tag `{queue}` (`taskq:{default}:s5`, ...), so every script
touches one Redis Cluster slot; `redis.lua` lists them. Publishing is one script call per queue
(and thousand messages): XADD, or ZADD into the delayed set for a message with a future
eta, then a wake-up; one round trip however many messages. Consuming is in `redis_consumer.py`: each
claimed entry gets a lease in a sorted set (its end in Redis time), which `extend` moves
forward; a settle checks that the entry is still this delivery's (same consumer and
delivery count in the group's pending list), so a stale holder cannot touch a new lease.

A consumer that finds its queues empty sets an idle marker and sleeps on pub/sub; a
publisher that sees the marker publishes a wake-up. Busy consumers get no wake-ups. A
consumer of one queue also offers to be handed the next message: the publish script leases
it to that consumer and publishes it on the consumer's own channel, so it need not claim
(see "publish" in `redis.lua` and docs/architecture.md, "Hand-overs on Redis").

When the result store is this same Redis, the broker counts chords itself (see
`redis_chords.py`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from typing import Any

import anyio
from redis.asyncio.client import PubSub

from taskq.batching import TurnBatcher
from taskq.brokers.base import Broadcasts, Broker, DeadLetter, Delivery, Scheduled
from taskq.brokers.redis_consumer import GROUP, Consumer, ms
from taskq.config import Settings
from taskq.errors import BrokerUnavailable
from taskq.message import Message
from taskq.redis_db import (
    OPTIONS as REDIS_OPTIONS,
)
from taskq.redis_db import (
    TRANSIENT_ERRORS,
    Command,
    RedisConnection,
    RedisSettings,
    RetryBackoff,
    Scripts,
    SharedConnection,
    close_pubsub,
    retrying,
    write_at_once,
    writes_at_once,
)
from taskq.tls import TLSOptions
from taskq.urls import masked_url

BANDS = 10
PURGE_CHUNK = 10_000
PUBLISH_CHUNK = 1000  # messages per script call, so that no call holds Redis up for long
SCRIPTS = Scripts("taskq.brokers", "redis.lua")
_STREAM_ID = re.compile(r"\d+-\d+")
# A message ready to send: its queue and the "publish" script's band, due, token and body.
Publication = tuple[str, tuple[int, int, str, bytes]]


def _band(priority: object) -> int:
    """The priority's stream; out-of-range values are kept (the worker dead-letters them)."""
    return min(max(priority, 0), BANDS - 1) if isinstance(priority, int) else 0


def placement(message: Message, now: float) -> tuple[int, int, str]:
    """The "publish" script's band, due time (epoch ms, 0: ready now) and unique token."""
    delayed = message.eta is not None and message.eta > now
    due, token = (ms(message.eta or 0), secrets.token_hex(8)) if delayed else (0, "")
    return _band(message.priority), due, token


class QueueKeys:
    """A queue's keys, in the order the scripts take them, and its wake-up channel."""

    __slots__ = ("base", "channel", "keys")

    def __init__(self, prefix: str, queue: str) -> None:
        self.base = base = f"{prefix}{{{queue}}}:"
        streams = [f"{base}s{band}" for band in range(BANDS)]
        self.keys = (
            *streams,
            f"{base}delayed",
            f"{base}leases",
            f"{base}dead",
            f"{base}idle",
            f"{base}offers",
        )
        self.channel = f"{prefix}wake:{queue}"

    def hand_over_channel(self, consumer: str) -> str:
        """Where the "publish" script hands `consumer` a message it offered to take."""
        return f"{self.channel}:{consumer}"

    def stream(self, band: int) -> str:
        return self.keys[band]

    @property
    def delayed(self) -> str:
        return self.keys[BANDS]

    @property
    def dead(self) -> str:
        return self.keys[BANDS + 2]

    def chord(self, group_id: str) -> tuple[str, str, str]:
        """The recorded members, the done marker and the added members of a chord whose
        callback goes here."""
        chord = f"{self.base}chord:{group_id}:"
        return f"{chord}results", f"{chord}done", f"{chord}added"


class RedisBroker(Broker):
    """A broker on Redis or Redis Cluster (`redis://host:port/db?cluster=true`, `rediss://`).

    Transport options of its own: `prefix`, `cluster`, `reconnect_timeout` (see
    `RedisSettings`); `visibility_timeout` is how long a delivery's lease lasts unless renewed.
    """

    OPTIONS = REDIS_OPTIONS

    def __init__(self, url: str, conf: Settings) -> None:
        super().__init__(url, conf)
        tls = TLSOptions.read(conf.broker_use_ssl, "broker_use_ssl", url)
        self.settings = RedisSettings.parse(url, self.transport, conf.broker_pool_limit, tls)
        self._shared = SharedConnection(self.settings)
        self._keys: dict[str, QueueKeys] = {}
        self._event_retention = conf.event_retention
        self._events_key = f"{self.settings.prefix}events"
        self._publisher = TurnBatcher(self._publish_now)

    @property
    def connection(self) -> RedisConnection:
        return self._shared.connection

    async def connect(self) -> None:
        await self._shared.open_with(SCRIPTS)

    async def close(self) -> None:
        await self._shared.close()

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(self.settings.prefix, queue)
        return keys

    def script(self, name: str, queue: str, args: Sequence[Any]) -> Command:
        return SCRIPTS.call(name, self.keys(queue).keys, args)

    async def send(self, commands: Sequence[Command], *, raise_errors: bool = True) -> list[Any]:
        """One pipeline, without retries (see `Scripts.run`)."""
        return await SCRIPTS.run(self.connection.client, commands, raise_errors=raise_errors)

    @property
    def writes_at_once(self) -> bool:
        """Whether `write_at_once` may be used (one server, connections of taskq's lanes)."""
        return writes_at_once(self.connection.client)

    async def write_at_once(self, command: Command) -> Awaitable[Any]:
        """Write a script call now, in the caller's task; its reply to come, to be awaited
        by another task (see `redis_db.write_at_once`)."""
        return await write_at_once(self.connection.client, command)

    @property
    def spreads_queues(self) -> bool:
        return self.settings.cluster

    def failure_domain(self, queue: str) -> str | None:
        """What becomes unreachable together with `queue`: in a cluster its slot's master
        (each queue its own domain, however masters share them), else the one server."""
        return queue if self.settings.cluster else None

    async def send_apart(self, queues: Sequence[str], commands: Sequence[Command]) -> list[Any]:
        """`send(commands, raise_errors=False)`, `commands[i]` being about `queues[i]`, with
        the commands of each failure domain in a round trip of its own, concurrently: Redis
        unreachable for one domain is the result (the error) of its commands only."""
        domains: dict[str | None, list[int]] = {}
        for index, queue in enumerate(queues):
            domains.setdefault(self.failure_domain(queue), []).append(index)
        results: list[Any] = [None] * len(commands)

        async def send_domain(indexes: list[int]) -> None:
            try:
                replies = await self.send([commands[i] for i in indexes], raise_errors=False)
            except TRANSIENT_ERRORS as exc:
                replies = [exc] * len(indexes)
            for index, reply in zip(indexes, replies, strict=True):
                results[index] = reply

        if len(domains) == 1:
            await send_domain(next(iter(domains.values())))
        else:
            async with anyio.create_task_group() as group:
                for indexes in domains.values():
                    group.start_soon(send_domain, indexes)
        return results

    async def run(self, commands: Sequence[Command], what: str) -> list[Any]:
        """One pipeline, retried while Redis is unreachable."""
        outage = self.connection.outage
        return await retrying(
            lambda: self.send(commands), self.settings.reconnect_timeout, what, outage
        )

    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        """Encoded here (a message that cannot be is this call's error alone), then sent
        with the other publishes of this loop turn (`TurnBatcher`)."""
        now = time.time()
        await self._publisher.submit(
            [
                (queue, (*placement(message, now), self.options.encode(message)))
                for message, queue in items
            ]
        )

    async def _publish_now(self, entries: list[Publication]) -> list[Exception | None]:
        """One round trip: a "publish" script call per queue (and PUBLISH_CHUNK messages);
        each entry's error is its queue's first."""
        by_queue: dict[str, list[Any]] = {}
        for queue, message in entries:
            by_queue.setdefault(queue, []).extend(message)
        step = 4 * PUBLISH_CHUNK  # four arguments per message
        queues: list[str] = []
        commands: list[Command] = []
        for queue, fields in by_queue.items():
            for i in range(0, len(fields), step):
                queues.append(queue)
                commands.append(
                    self.script("publish", queue, [self.keys(queue).channel, *fields[i : i + step]])
                )
        try:
            replies = await retrying(
                lambda: self._send_retryable(commands),
                self.settings.reconnect_timeout,
                "publishing",
                self.connection.outage,
            )
        except TRANSIENT_ERRORS as exc:
            raise BrokerUnavailable(
                f"Redis at {masked_url(self.url)} took no message within reconnect_timeout "
                f"({self.settings.reconnect_timeout:g} s): {exc}"
            ) from exc
        errors: dict[str, Exception] = {}
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                errors.setdefault(queue, reply)
        return [errors.get(queue) for queue, _ in entries]

    async def _send_retryable(self, commands: Sequence[Command]) -> list[Any]:
        """`send` returning each command's error, but raising one that a retry may mend."""
        replies = await self.send(commands, raise_errors=False)
        for reply in replies:
            if isinstance(reply, TRANSIENT_ERRORS):
                raise reply
        return replies

    def _consume(self, queues: list[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        return Consumer(self, queues, prefetch).deliveries()

    async def queue_length(self, queue: str) -> int:
        [count] = await self.run([self.script("length", queue, [])], "counting messages")
        return int(count)

    async def scheduled(self, queue: str, limit: int = 100) -> list[Scheduled]:
        command = ("ZRANGE", self.keys(queue).delayed, 0, limit - 1, "WITHSCORES")
        [members] = await self.run([command], "reading delayed messages")
        # A member is `<band><deliveries>:<token>:<body>` (redis.lua), its score the due ms.
        return [Scheduled(member.split(b":", 2)[2], due / 1000) for member, due in members]

    async def scheduled_length(self, queue: str) -> int:
        [count] = await self.run([("ZCARD", self.keys(queue).delayed)], "counting delayed messages")
        return int(count)

    async def purge(self, queue: str) -> int:
        total = 0
        while True:
            command = self.script("purge", queue, [GROUP, PURGE_CHUNK])
            [(deleted, more)] = await self.run([command], "purging")
            total += int(deleted)
            if not more:
                return total

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        command = ("XRANGE", self.keys(queue).dead, "-", "+", "COUNT", limit)
        [entries] = await self.run([command], "reading dead letters")
        return [
            DeadLetter(
                entry_id.decode(), queue, fields[b"r"].decode(), fields[b"b"], float(fields[b"t"])
            )
            for entry_id, fields in entries
        ]

    async def dead_letter_length(self, queue: str) -> int:
        [count] = await self.run([("XLEN", self.keys(queue).dead)], "counting dead letters")
        return int(count)

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        command = ("XADD", self.keys(queue).dead, "*", "r", reason, "b", body, "t", time.time())
        await self.run([command], "dead-lettering")

    async def remove_dead_letters(self, queue: str, ids: Sequence[str]) -> int:
        entry_ids = [entry_id for entry_id in ids if _STREAM_ID.fullmatch(entry_id)]
        if not entry_ids:
            return 0
        [count] = await self.run(
            [("XDEL", self.keys(queue).dead, *entry_ids)], "removing dead letters"
        )
        return int(count)

    async def purge_dead_letters(self, queue: str) -> int:
        [count] = await self.run([self.script("purge_dead", queue, [])], "purging dead letters")
        return int(count)

    async def broadcast(self, channel: str, payload: bytes) -> None:
        await self.run([("PUBLISH", self._broadcast_channel(channel), payload)], "broadcasting")

    def subscribe(self, channel: str) -> Broadcasts:
        return _Broadcasts(self, self._broadcast_channel(channel))

    # Task events: a stream trimmed to the last `event_retention` seconds, read back from
    # `since` seconds ago by a late reader (entry ids are Redis' milliseconds).
    KEEPS_EVENTS = True
    EVENTS_READ_BLOCK_MS = 500  # a reader's XREAD waits this long for more

    async def publish_events(self, payload: bytes) -> None:
        oldest = ms(time.time() - self._event_retention)
        command = ("XADD", self._events_key, "MINID", "~", oldest, "*", "b", payload)
        await self.run([command], "sending task events")

    def read_events(self, since: float | None) -> Broadcasts:
        return self._read_events(since)

    async def _read_events(self, since: float | None) -> AsyncGenerator[bytes, None]:
        seconds, micros = await self.connection.client.time()
        last = f"{max(0, seconds * 1000 + micros // 1000 - ms(since or 0.0))}-0"
        backoff = RetryBackoff()
        while True:
            try:
                answer: Any = await self.connection.client.xread(
                    {self._events_key: last}, count=100, block=self.EVENTS_READ_BLOCK_MS
                )
            except TRANSIENT_ERRORS as exc:
                self.connection.outage.failed("reading task events", exc)
                await backoff.sleep()
                continue
            if backoff.failures:
                self.connection.outage.over()
                backoff = RetryBackoff()
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    payload = fields.get(b"b")
                    if payload is not None:
                        yield payload

    def _broadcast_channel(self, channel: str) -> str:
        return f"{self.settings.prefix}broadcast:{channel}"


class _Broadcasts(AsyncIterator[bytes]):
    """The payloads broadcast on one channel from the moment of the first `__anext__`."""

    def __init__(self, broker: RedisBroker, channel: str) -> None:
        self._broker = broker
        self._channel = channel
        self._pubsub: PubSub | None = None
        self._closed = False
        self._backoff = RetryBackoff()

    async def __anext__(self) -> bytes:
        while not self._closed:
            try:
                if self._pubsub is None:
                    self._pubsub = self._broker.connection.pubsub()
                    await self._pubsub.subscribe(self._channel)
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except TRANSIENT_ERRORS as exc:
                self._broker.connection.outage.failed("listening to broadcasts", exc)
                await self.aclose_pubsub()
                await self._backoff.sleep()
                continue
            if self._backoff.failures:
                self._broker.connection.outage.over()
                self._backoff = RetryBackoff()
            if message is not None and message["type"] == "message":
                payload: bytes = message["data"]
                return payload
        raise StopAsyncIteration

    async def aclose_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await close_pubsub(pubsub)

    async def aclose(self) -> None:
        self._closed = True
        await self.aclose_pubsub()
