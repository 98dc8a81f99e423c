"""The Redis result store's `wait()`: one pub/sub connection shared by every waiter.

One reader, a service of the store started by the first wait, owns the connection: it
subscribes, reads every notification and hands each to the waiters of its channel, so no
waiter ever depends on another to read for it. A waiter joins its task's channel (the
SUBSCRIBEs and UNSUBSCRIBEs of one loop turn go out in one write), reads the state once the
subscription is active, and only then waits for the notification: a result written before
or during `wait()` is never missed. Where the subscribed connection answers other commands
too (`RedisConnection.commands_when_subscribed`: RESP3 on one server) the state is read by
a GET written after the SUBSCRIBE on that very connection, in the same write, so Redis runs
it once the subscription is active and the reader hands its reply back (one round trip);
elsewhere the waiter waits until Redis has confirmed the subscription, then reads the state
(two). When the connection is lost the reader connects again and every waiter subscribes
and reads again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from taskq.background import ServiceGroup
from taskq.batching import Batcher
from taskq.redis_db import TRANSIENT_ERRORS, RetryBackoff, close_pubsub, read_pubsub
from taskq.stores.base import TaskMeta

if TYPE_CHECKING:
    from taskq.redis_db import RedisConnection

logger = logging.getLogger("taskq.redis")

CONNECTION_LOST = "waiting for results"
_UNREAD = object()  # a waiter's GET on the subscribed connection, its reply still to come


class _Waiter:
    __slots__ = ("channel", "event", "key", "meta", "reads", "refetch", "stored")

    def __init__(self, channel: bytes, key: str) -> None:
        self.channel = channel
        self.key = key
        self.meta: TaskMeta | None = None
        self.refetch = False  # the connection was replaced, or a notification was unreadable
        self.stored: object = _UNREAD  # its last GET's reply (bytes, None, or its error)
        self.reads = 0  # its GETs written on the subscribed connection, replies to come
        self.event = anyio.Event()

    def wake(self) -> None:
        self.event.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.event = anyio.Event()
            await self.event.wait()


class Listener:
    """Waits for ready states announced on `channel`s by the store's "states" script."""

    def __init__(self, connection: Callable[[], RedisConnection]) -> None:
        self._connection = connection
        self._services = ServiceGroup("taskq redis result listener")
        self._reading = False
        self._pubsub: PubSub | None = None  # the reader's, once it is connected
        self._reconnect: anyio.CancelScope | None = None
        self._waiters: dict[bytes, set[_Waiter]] = {}
        self._subscribed: set[bytes] = set()  # SUBSCRIBE was the last command sent for these
        self._unconfirmed: dict[bytes, int] = {}  # (un)subscribes whose reply is still to come
        self._adding: set[bytes] = set()
        self._dropping: set[bytes] = set()
        self._reading_keys: dict[_Waiter, None] = {}  # GETs to write on the subscribed connection
        self._keys_read: deque[_Waiter] = deque()  # GETs written there, in order, replies to come
        self._sync: Batcher[None, None] = Batcher(self._send_subscriptions)

    async def wait(
        self, channel: bytes, key: str, fetch: Callable[[], Awaitable[TaskMeta | None]]
    ) -> TaskMeta:
        """The meta stored at `key` once it is ready (read by `fetch()` where the subscribed
        connection cannot), or the one that the channel announces."""
        waiter = _Waiter(channel, key)
        self._join(waiter)
        if not self._reading:
            self._reading = True
            self._services.start_soon(self._read)
        reads_keys = self._connection().commands_when_subscribed
        backoff = RetryBackoff()
        try:
            while True:
                waiter.refetch = False
                try:
                    read = self._read_key(waiter) if reads_keys else self._fetch(waiter, fetch)
                    meta = await read
                    if waiter.refetch:
                        continue
                except TRANSIENT_ERRORS:
                    await backoff.sleep()
                    continue
                if meta is not None and meta.ready:
                    return meta
                await waiter.until(lambda: waiter.meta is not None or waiter.refetch)
                if waiter.meta is not None:
                    return waiter.meta
        finally:
            self._leave(waiter)

    async def _read_key(self, waiter: _Waiter) -> TaskMeta | None:
        """The state, read by a GET that follows the waiter's SUBSCRIBE on its connection;
        None if the notification or a lost connection came first."""
        waiter.stored = _UNREAD
        self._reading_keys[waiter] = None
        await self._sync.submit(None)
        await waiter.until(
            lambda: waiter.stored is not _UNREAD or waiter.meta is not None or waiter.refetch
        )
        stored = waiter.stored
        if stored is _UNREAD or stored is None:
            return None
        if isinstance(stored, Exception):
            raise stored
        assert isinstance(stored, bytes)
        return TaskMeta.decode(stored)

    async def _fetch(
        self, waiter: _Waiter, fetch: Callable[[], Awaitable[TaskMeta | None]]
    ) -> TaskMeta | None:
        """The state, read by `fetch()` once Redis has confirmed the subscription; None if the
        connection was lost first."""
        if self._adding or self._dropping:
            await self._sync.submit(None)
        await waiter.until(lambda: self._active(waiter.channel) or waiter.refetch)
        return None if waiter.refetch else await fetch()

    async def close(self) -> None:
        await self._services.aclose()
        self._reading = False
        self._lost()

    def _active(self, channel: bytes) -> bool:
        return channel in self._subscribed and channel not in self._unconfirmed

    def _join(self, waiter: _Waiter) -> None:
        channel = waiter.channel
        self._waiters.setdefault(channel, set()).add(waiter)
        self._dropping.discard(channel)
        if channel not in self._subscribed:
            self._adding.add(channel)

    def _leave(self, waiter: _Waiter) -> None:
        """Unsubscribed with the next subscriptions sent: a lone wait costs no extra command."""
        channel = waiter.channel
        self._reading_keys.pop(waiter, None)
        waiters = self._waiters[channel]
        waiters.discard(waiter)
        if not waiters:
            del self._waiters[channel]
            self._adding.discard(channel)
            if channel in self._subscribed:
                self._dropping.add(channel)

    async def _read(self) -> None:
        """The reader: connect, subscribe every waiter's channel, dispatch what arrives; on a
        lost connection, start over. Nothing it meets ends it."""
        backoff = RetryBackoff()
        while True:
            connection = self._connection()
            outage, pubsub = connection.outage, connection.pubsub()
            try:
                with anyio.CancelScope() as self._reconnect:
                    await pubsub.connect()  # type: ignore[no-untyped-call]
                    self._pubsub = pubsub
                    self._adding |= self._waiters.keys()
                    await self._sync.submit(None)
                    outage.over()
                    backoff = RetryBackoff()
                    while True:
                        try:
                            reply: Any = await read_pubsub(pubsub)
                        except ResponseError as exc:  # a GET's, for its waiter
                            reply = exc
                        if isinstance(reply, list):
                            self._dispatch(reply)
                        else:
                            self._key_read(reply)
            except TRANSIENT_ERRORS as exc:
                outage.failed(CONNECTION_LOST, exc)
            except Exception:
                logger.exception("The Redis result listener failed; it starts over")
            finally:
                self._lost()
                with anyio.CancelScope(shield=True):
                    await close_pubsub(pubsub)
            await backoff.sleep()

    def _lost(self) -> None:
        """The connection is gone: every waiter subscribes and reads again on the next one."""
        self._pubsub = self._reconnect = None
        self._subscribed.clear()
        self._unconfirmed.clear()
        self._dropping.clear()
        self._adding = set(self._waiters)
        for waiter in self._keys_read:
            waiter.reads = 0
        self._keys_read.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.refetch = True
                waiter.wake()

    async def _send_subscriptions(self, _: list[None]) -> None:
        pubsub = self._pubsub
        if pubsub is None:  # the reader subscribes everyone once it is connected
            return
        adding, self._adding = self._adding, set()
        dropping, self._dropping = self._dropping, set()
        self._subscribed |= adding
        self._subscribed -= dropping
        commands: list[tuple[Any, ...]] = [
            (command, *channels)
            for command, channels in (("SUBSCRIBE", adding), ("UNSUBSCRIBE", dropping))
            if channels
        ]
        reading, self._reading_keys = list(self._reading_keys), {}
        for waiter in reading:
            commands.append(("GET", waiter.key))
            waiter.reads += 1
        self._keys_read.extend(reading)
        for channel in adding | dropping:
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
        try:
            # In one write, on the connection itself: not `subscribe()`, with which redis-py
            # would also resubscribe by itself on reconnect, nor its `execute_command` (a
            # retry wrapper and metrics a command).
            connection = pubsub.connection
            if connection is None:
                raise RedisConnectionError("the pub/sub connection is closed")
            await connection.send_packed_command(connection.pack_commands(commands), False)
        except TRANSIENT_ERRORS:
            if pubsub is self._pubsub and self._reconnect is not None:
                self._reconnect.cancel()  # the reader starts over on a new connection
            raise

    def _key_read(self, reply: object) -> None:
        """The reply of the oldest GET still to be answered, to its waiter if it is the last
        one the waiter sent (an earlier one may have run before a notification it missed)."""
        waiter = self._keys_read.popleft()
        waiter.reads -= 1
        if waiter.reads == 0:
            waiter.stored = reply
            waiter.wake()

    def _dispatch(self, reply: list[Any]) -> None:
        kind, channel = reply[0], reply[1]
        waiters = self._waiters.get(channel, ())
        if kind in (b"subscribe", b"unsubscribe"):
            left = self._unconfirmed.get(channel, 0) - 1
            if left > 0:
                self._unconfirmed[channel] = left
            else:
                self._unconfirmed.pop(channel, None)
        elif kind == b"message":
            try:
                meta: TaskMeta | None = TaskMeta.decode(reply[2])
            except Exception:  # not ours: the waiters read the stored state instead
                logger.warning("Ignored an unreadable notification on %r", channel)
                meta = None
            for waiter in waiters:
                waiter.meta = meta
                waiter.refetch = meta is None
        for waiter in waiters:
            waiter.wake()
