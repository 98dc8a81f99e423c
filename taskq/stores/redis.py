"""The Redis result store (`redis://...` or `rediss://...` as the result backend).

A task's state is one string key, written with `result_expires` as its TTL; a ready
state is written and PUBLISHed on the task's channel by one script, in the same round
trip. The `set_state` calls of one event-loop turn share one script call (one per
cluster slot). `wait()` never polls: one pub/sub connection per store, read by one
reader (`redis_listener.py`), carries the subscriptions of every waiting task.
Keys and scripts are listed in `redis.lua`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import anyio
from redis.crc import key_slot

from taskq.batching import Batcher
from taskq.chords import Added
from taskq.config import Settings
from taskq.defaults import CHORD_RETENTION
from taskq.errors import TimeoutError
from taskq.redis_db import OPTIONS as REDIS_OPTIONS
from taskq.redis_db import (
    Command,
    RedisConnection,
    RedisSettings,
    Scripts,
    SharedConnection,
    retrying,
)
from taskq.stores.base import ResultStore, StoreOptions, TaskMeta
from taskq.stores.redis_listener import Listener
from taskq.tls import store_tls

_SCRIPTS = Scripts("taskq.stores", "redis.lua")


# On a cluster, task states are written in this many domains, each a fixed range of hash
# slots: a dead master stalls the ranges that hold any of its slots, the others go on. Fixed
# ranges rather than each slot's current master: a task's domain must not change with a
# fail-over, or its STARTED could land after its SUCCESS.
WRITE_DOMAINS = 16
_HASH_SLOTS = 16384


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore(ResultStore):
    """A result store on Redis or Redis Cluster; its own transport options (of
    `result_backend_transport_options`) are `prefix`, `cluster`, `reconnect_timeout`."""

    def __init__(self, url: str, conf: Settings) -> None:
        transport = StoreOptions.read(conf, REDIS_OPTIONS).transport
        tls = store_tls(url, conf)
        self.settings = RedisSettings.parse(url, transport, conf.broker_pool_limit, tls)
        self._shared = SharedConnection(self.settings)
        self._writes: Batcher[tuple[str, bytes, float | None, bool], None] = Batcher(self._write)
        self._listener = Listener(lambda: self.connection)
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

    @property
    def spreads_writes(self) -> bool:
        return self._cluster

    def write_domain(self, task_id: str) -> Hashable:
        if not self._cluster:
            return None
        return key_slot(self._meta_key(task_id).encode()) * WRITE_DOMAINS // _HASH_SLOTS

    async def get(self, task_id: str) -> TaskMeta | None:
        [raw] = await self._run([("GET", self._meta_key(task_id))], "reading a task state")
        return None if raw is None else TaskMeta.decode(raw)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskMeta | None]:
        commands = [("GET", self._meta_key(task_id)) for task_id in task_ids]
        raws = await self._run(commands, "reading task states") if commands else []
        return [None if raw is None else TaskMeta.decode(raw) for raw in raws]

    async def wait(self, task_id: str, timeout: float | None) -> TaskMeta:
        with anyio.move_on_after(timeout):
            return await self._listener.wait(
                self.channel(task_id), self._meta_key(task_id), lambda: self._fetch(task_id)
            )
        raise TimeoutError(f"task {task_id} was not ready within {timeout} s")

    async def _fetch(self, task_id: str) -> TaskMeta | None:
        """`get` without retries: `wait` retries on its own."""
        [raw] = await _SCRIPTS.run(self.connection.client, [("GET", self._meta_key(task_id))])
        return None if raw is None else TaskMeta.decode(raw)

    async def forget(self, task_id: str) -> None:
        await self._run([("DEL", self._meta_key(task_id))], "forgetting a task state")

    async def chord_part_done(self, group_id: str, task_id: str, size: int) -> bool:
        keys = [self._chord_key(group_id, "members"), self._chord_key(group_id, "done")]
        keys.append(self._chord_key(group_id, "added"))
        args = [task_id, size, _ms(CHORD_RETENTION)]
        [done] = await self._run([_SCRIPTS.call("chord_part_done", keys, args)], "counting a chord")
        return bool(done)

    async def chord_add_member(self, group_id: str, token: str, task_id: str) -> Added:
        keys, args = [self._chord_key(group_id, "added")], [token, task_id, _ms(CHORD_RETENTION)]
        command = _SCRIPTS.call("chord_add_member", keys, args)
        [added] = await self._run([command], "adding a chord member")
        return Added.decode(added)

    async def chord_added(self, group_id: str) -> list[str]:
        command = ("HVALS", self._chord_key(group_id, "added"))
        [values] = await self._run([command], "reading a chord's added members")
        return [added.task_id for added in sorted(Added.decode(value) for value in values)]

    def _chord_key(self, group_id: str, name: str) -> str:
        return f"{self._prefix}chord:{{{group_id}}}:{name}"

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        command = ("SET", self._key(key), value, "NX", "PX", _ms(ttl))
        [stored] = await self._run([command], "setting a key")
        return bool(stored)

    async def set_key(self, key: str, value: bytes, ttl: float | None) -> None:
        expiry = () if ttl is None else ("PX", _ms(ttl))
        await self._run([("SET", self._key(key), value, *expiry)], "setting a key")

    async def get_key(self, key: str) -> bytes | None:
        [value] = await self._run([("GET", self._key(key))], "reading a key")
        return None if value is None else bytes(value)

    async def delete_key(self, key: str) -> None:
        await self._run([("DEL", self._key(key))], "deleting a key")

    def _key(self, key: str) -> str:
        return f"{self._prefix}key:{key}"

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        command = _SCRIPTS.call("lease", [f"{self._prefix}lease:{name}"], [owner, _ms(ttl)])
        [held] = await self._run([command], "taking a lease")
        return bool(held)

    async def lease_remaining(self, name: str) -> float | None:
        [ms] = await self._run([("PTTL", f"{self._prefix}lease:{name}")], "reading a lease")
        if ms == -2:  # no such key
            return None
        return float("inf") if ms == -1 else ms / 1000

    async def lease_holder(self, name: str) -> str | None:
        [owner] = await self._run([("GET", f"{self._prefix}lease:{name}")], "reading a lease")
        return owner.decode() if isinstance(owner, bytes) else owner

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
            lambda: _SCRIPTS.run(client, commands),
            self.settings.reconnect_timeout,
            what,
            self.connection.outage,
        )
