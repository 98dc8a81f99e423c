"""The Redis result store's `wait()`: one pub/sub connection shared by every waiter.

One reader, a service of the store started by the first wait, owns the connection: it
subscribes, reads every notification and hands each to the waiters of its channel, so no
waiter ever depends on another to read for it. A waiter joins its task's channel (the
SUBSCRIBEs and UNSUBSCRIBEs of one loop turn go out as one command), waits until Redis has
confirmed the subscription, reads the state, and only then waits for the notification: a
result written before or during `wait()` is never missed. When the connection is lost the
reader connects again and every waiter subscribes and reads again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from redis.asyncio.client import PubSub

from taskq.background import ServiceGroup
from taskq.batching import Batcher
from taskq.redis_db import TRANSIENT_ERRORS, RetryBackoff, close_pubsub
from taskq.stores.base import TaskMeta

if TYPE_CHECKING:
    from taskq.redis_db import RedisConnection

logger = logging.getLogger("taskq.redis")

CONNECTION_LOST = "waiting for results"


class _Waiter:
    __slots__ = ("channel", "event", "meta", "refetch")

    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.meta: TaskMeta | None = None
        self.refetch = False  # the connection was replaced, or a notification was unreadable
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
        self._sync: Batcher[None, None] = Batcher(self._send_subscriptions)

    async def wait(
        self, channel: bytes, fetch: Callable[[], Awaitable[TaskMeta | None]]
    ) -> TaskMeta:
        """The meta `fetch()` reads once it is ready, or that the channel announces."""
        waiter = _Waiter(channel)
        self._join(waiter)
        if not self._reading:
            self._reading = True
            self._services.start_soon(self._read)
        backoff = RetryBackoff()
        try:
            while True:
                waiter.refetch = False
                try:
                    if self._adding or self._dropping:
                        await self._sync.submit(None)
                    await waiter.until(lambda: self._active(channel) or waiter.refetch)
                    if waiter.refetch:
                        continue
                    meta = await fetch()
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
                        message = await pubsub.get_message(timeout=None)
                        if message is not None:
                            self._dispatch(message)
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
        try:
            for command, channels in (("SUBSCRIBE", adding), ("UNSUBSCRIBE", dropping)):
                if channels:
                    for channel in channels:
                        self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
                    # Not `subscribe()`: redis-py would also resubscribe by itself on reconnect.
                    await pubsub.execute_command(command, *channels)
        except TRANSIENT_ERRORS:
            if pubsub is self._pubsub and self._reconnect is not None:
                self._reconnect.cancel()  # the reader starts over on a new connection
            raise

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        waiters = self._waiters.get(channel, ())
        if kind in ("subscribe", "unsubscribe"):
            left = self._unconfirmed.get(channel, 0) - 1
            if left > 0:
                self._unconfirmed[channel] = left
            else:
                self._unconfirmed.pop(channel, None)
        elif kind == "message":
            try:
                meta: TaskMeta | None = TaskMeta.decode(message["data"])
            except Exception:  # not ours: the waiters read the stored state instead
                logger.warning("Ignored an unreadable notification on %r", channel)
                meta = None
            for waiter in waiters:
                waiter.meta = meta
                waiter.refetch = meta is None
        for waiter in waiters:
            waiter.wake()
