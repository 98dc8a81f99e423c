"""The Redis result store (`redis://...` or `rediss://...` as the result backend).

A task's state is one string key, written with `result_expires` as its TTL; a ready
state is written and PUBLISHed on the task's channel by one script, in the same round
trip. The `set_state` calls of one event-loop turn share one script call (one per
cluster slot). `wait()` never polls:
one pub/sub connection per store carries the subscriptions of every waiting task.
Keys and scripts are listed in `redis.lua`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from taskq.errors import TimeoutError
from taskq.redis_db import (
    TRANSIENT_ERRORS,
    Batcher,
    Command,
    RedisConnection,
    RedisSettings,
    RetryBackoff,
    Scripts,
    SharedConnection,
    close_pubsub,
    retrying,
)
from taskq.stores.base import StoreOptions, TaskMeta

CHORD_DONE_RETENTION = 7 * 24 * 3600.0  # how long a late duplicate member still sees "done"
READ_SLICE = 1.0  # seconds a waiter reads pub/sub before it looks at its subscriptions again
_SCRIPTS = Scripts("taskq.stores", "redis.lua")

logger = logging.getLogger("taskq.redis")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    """A result store on Redis or Redis Cluster; takes the broker's transport options
    (`prefix`, `cluster`, `reconnect_timeout`)."""

    def __init__(self, url: str, options: StoreOptions) -> None:
        self.settings = RedisSettings.parse(url, options.transport)
        self._shared = SharedConnection(self.settings)
        self._writes: Batcher[tuple[str, bytes, float | None, bool]] = Batcher(self._write)
        self._listener = _Listener(self)
        self._prefix = self.settings.prefix
        self._cluster = self.settings.cluster

    @property
    def connection(self) -> RedisConnection:
        return self._shared.connection

    async def connect(self) -> None:
        await self._shared.open_with(_SCRIPTS)

    async def close(self) -> None:
        await self._listener.close()
        await self._shared.close()

    def channel(self, task_id: str) -> bytes:
        return f"{self._prefix}ready:{task_id}".encode()

    async def set_state(self, task_id: str, meta: TaskMeta, ttl: float | None) -> None:
        await self._writes.submit((task_id, meta.encode(), ttl, meta.ready))

    async def set_states(self, metas: Sequence[TaskMeta], ttl: float | None) -> None:
        if metas:
            await self._write([(meta.task_id, meta.encode(), ttl, meta.ready) for meta in metas])

    async def _write(self, states: list[tuple[str, bytes, float | None, bool]]) -> None:
        """One script call per cluster slot (so, without a cluster, one in all)."""
        slots: dict[int, tuple[list[str], list[Any]]] = {}
        for task_id, raw, ttl, ready in states:
            key = self._meta_key(task_id)
            keys, args = slots.setdefault(key_slot(key.encode()) if self._cluster else 0, ([], []))
            keys.append(key)
            args += [raw, 0 if ttl is None else _ms(ttl), self.channel(task_id) if ready else b""]
        commands = [_SCRIPTS.call("states", keys, args) for keys, args in slots.values()]
        await self._run(commands, "writing task states")

    async def get(self, task_id: str) -> TaskMeta | None:
        [raw] = await self._run([("GET", self._meta_key(task_id))], "reading a task state")
        return None if raw is None else TaskMeta.decode(raw)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskMeta | None]:
        commands = [("GET", self._meta_key(task_id)) for task_id in task_ids]
        raws = await self._run(commands, "reading task states") if commands else []
        return [None if raw is None else TaskMeta.decode(raw) for raw in raws]

    async def wait(self, task_id: str, timeout: float | None) -> TaskMeta:
        with anyio.move_on_after(timeout):
            return await self._listener.wait(self.channel(task_id), lambda: self._fetch(task_id))
        raise TimeoutError(f"task {task_id} was not ready within {timeout} s")

    async def _fetch(self, task_id: str) -> TaskMeta | None:
        """`get` without retries: `wait` retries on its own."""
        [raw] = await _SCRIPTS.run(self.connection.client, [("GET", self._meta_key(task_id))])
        return None if raw is None else TaskMeta.decode(raw)

    async def forget(self, task_id: str) -> None:
        await self._run([("DEL", self._meta_key(task_id))], "forgetting a task state")

    async def chord_part_done(self, group_id: str, task_id: str, size: int) -> bool:
        base = f"{self._prefix}chord:{{{group_id}}}"
        keys = [f"{base}:members", f"{base}:done"]
        args = [task_id, size, _ms(CHORD_DONE_RETENTION)]
        [done] = await self._run([_SCRIPTS.call("chord_part_done", keys, args)], "counting a chord")
        return bool(done)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        command = ("SET", f"{self._prefix}key:{key}", value, "NX", "PX", _ms(ttl))
        [stored] = await self._run([command], "setting a key")
        return bool(stored)

    async def get_key(self, key: str) -> bytes | None:
        [value] = await self._run([("GET", f"{self._prefix}key:{key}")], "reading a key")
        return None if value is None else bytes(value)

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        command = _SCRIPTS.call("lease", [f"{self._prefix}lease:{name}"], [owner, _ms(ttl)])
        [held] = await self._run([command], "taking a lease")
        return bool(held)

    async def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        if task_ids:
            command = _SCRIPTS.call("revoke", [self._revoked_key], [_ms(ttl), *task_ids])
            await self._run([command], "revoking")

    async def revoked(self, task_ids: Sequence[str]) -> set[str]:
        if not task_ids:
            return set()
        command = _SCRIPTS.call("revoked", [self._revoked_key], list(task_ids))
        [found] = await self._run([command], "reading revocations")
        return {task_id.decode() for task_id in found}

    async def all_revoked(self) -> set[str]:
        command = _SCRIPTS.call("all_revoked", [self._revoked_key], [])
        [found] = await self._run([command], "reading revocations")
        return {task_id.decode() for task_id in found}

    @property
    def _revoked_key(self) -> str:
        return f"{self._prefix}revoked"

    def _meta_key(self, task_id: str) -> str:
        return f"{self._prefix}meta:{task_id}"

    async def _run(self, commands: Sequence[Command], what: str) -> list[Any]:
        client = self.connection.client
        return await retrying(
            lambda: _SCRIPTS.run(client, commands), self.settings.reconnect_timeout, what
        )


class _Waiter:
    __slots__ = ("channel", "event", "meta")

    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.meta: TaskMeta | None = None
        self.event = anyio.Event()


class _Listener:
    """One pub/sub connection shared by every `wait()` of a store.

    A waiter subscribes to its task's channel (the SUBSCRIBEs and UNSUBSCRIBEs of one loop
    turn go out as one command), waits until Redis confirms, reads the state, and only then
    waits for the notification, so a result written before or during `wait()` is never
    missed. There is no background task: whichever waiter finds nobody reading reads for
    everyone, and hands over to a parked waiter once its own result has come. A lost
    connection starts a new epoch: every waiter subscribes and reads again.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._pubsub: PubSub | None = None
        self._waiters: dict[bytes, set[_Waiter]] = {}
        self._subscribed: set[bytes] = set()  # SUBSCRIBE was the last command sent for these
        self._unconfirmed: dict[bytes, int] = {}  # (un)subscribes whose reply is still to come
        self._adding: set[bytes] = set()
        self._dropping: set[bytes] = set()
        self._sync: Batcher[None] = Batcher(self._send_subscriptions)
        self._parked: set[_Waiter] = set()
        self._reading = False
        self._epoch = 0

    async def wait(
        self, channel: bytes, fetch: Callable[[], Awaitable[TaskMeta | None]]
    ) -> TaskMeta:
        waiter = _Waiter(channel)
        self._join(waiter)
        backoff = RetryBackoff()
        try:
            while True:
                try:
                    meta = await self._attempt(waiter, fetch, self._epoch)
                except TRANSIENT_ERRORS:
                    await backoff.sleep()
                    continue
                if meta is not None:
                    return meta
        finally:
            self._leave(waiter)

    async def _attempt(
        self, waiter: _Waiter, fetch: Callable[[], Awaitable[TaskMeta | None]], epoch: int
    ) -> TaskMeta | None:
        """Subscribe, read, wait: the meta, or None if the connection was replaced meanwhile."""
        if not self._active(waiter.channel):
            await self._sync.submit(None)
            await self._until(waiter, lambda: self._active(waiter.channel) or self._epoch != epoch)
            if self._epoch != epoch:
                return None
        meta = await fetch()
        if meta is not None and meta.ready:
            return meta
        await self._until(waiter, lambda: waiter.meta is not None or self._epoch != epoch)
        return waiter.meta

    def _active(self, channel: bytes) -> bool:
        return channel in self._subscribed and channel not in self._unconfirmed

    def _join(self, waiter: _Waiter) -> None:
        channel = waiter.channel
        self._waiters.setdefault(channel, set()).add(waiter)
        self._dropping.discard(channel)
        if channel not in self._subscribed:
            self._adding.add(channel)

    def _leave(self, waiter: _Waiter) -> None:
        channel = waiter.channel
        waiters = self._waiters[channel]
        waiters.discard(waiter)
        self._parked.discard(waiter)
        if not waiters:
            del self._waiters[channel]
            self._adding.discard(channel)
            if channel in self._subscribed:
                self._dropping.add(channel)

    async def _send_subscriptions(self, _: list[None]) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            pubsub = self._pubsub = self._store.connection.pubsub()
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
        except TRANSIENT_ERRORS as exc:
            await self._reset(pubsub, exc)
            raise

    async def _until(self, waiter: _Waiter, done: Callable[[], bool]) -> None:
        while not done():
            if self._reading:
                waiter.event = anyio.Event()
                self._parked.add(waiter)
                try:
                    await waiter.event.wait()
                finally:
                    self._parked.discard(waiter)
                continue
            self._reading = True
            try:
                await self._read(done)
            finally:
                self._reading = False
                if self._parked:
                    next(iter(self._parked)).event.set()

    async def _read(self, done: Callable[[], bool]) -> None:
        while not done():
            if self._adding or self._dropping or self._pubsub is None:
                await self._sync.submit(None)
            pubsub = self._pubsub
            assert pubsub is not None
            try:
                message = await pubsub.get_message(timeout=READ_SLICE)
            except TRANSIENT_ERRORS as exc:
                await self._reset(pubsub, exc)
                raise
            if message is not None and pubsub is self._pubsub:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind in ("subscribe", "unsubscribe"):
            left = self._unconfirmed.get(channel, 0) - 1
            if left > 0:
                self._unconfirmed[channel] = left
            else:
                self._unconfirmed.pop(channel, None)
        elif kind == "message":
            meta = TaskMeta.decode(message["data"])
            for waiter in self._waiters.get(channel, ()):
                waiter.meta = meta
        for waiter in self._waiters.get(channel, ()):
            waiter.event.set()

    async def _reset(self, broken: PubSub, error: Exception) -> None:
        """Drop a broken connection (once) and wake everyone to subscribe and read again."""
        if broken is not self._pubsub:
            return
        logger.warning("Redis unavailable while waiting for results (%s): reconnecting", error)
        self._epoch += 1
        self._subscribed.clear()
        self._unconfirmed.clear()
        self._dropping.clear()
        self._adding = set(self._waiters)
        for waiter in self._parked:
            waiter.event.set()
        await self.close()

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await close_pubsub(pubsub)
