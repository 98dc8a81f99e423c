"""The SQLite result store: the embedded default, safe across processes.

The file may be shared with the SQLite broker, so every table is prefixed
`taskq_` and none collides with the broker's. Task states, idempotency keys,
leases, revocations, finished chords and the members added to a chord (kind
`chord_added:<group id>`, key: the addition's token) share one table of expiring
values, told apart by `kind`; chord members have a table of their own.

Calls run in a worker thread, one at a time per connection, so the event loop
never blocks. `wait()` is woken at once by a `set_state` on the same file in the
same process, and otherwise polls with exponential backoff.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import orjson

from taskq.chords import Added
from taskq.config import Settings
from taskq.defaults import CHORD_RETENTION
from taskq.sqlite_db import OPTIONS as SQLITE_OPTIONS
from taskq.sqlite_db import Database, transaction
from taskq.stores.base import ResultStore, StoreOptions, TaskMeta, announce_ready, wait_until_ready
from taskq.urls import sqlite_path

T = TypeVar("T")

PURGE_INTERVAL = 60.0  # seconds between sweeps of expired rows, per store
PURGE_BATCH = 1000  # rows per sweep, so a sweep never holds the write lock for long

_META = "meta"
_KEY = "key"
_LEASE = "lease"
_REVOKED = "revoked"
_CHORD_DONE = "chord_done"
_CHORD_ADDED = "chord_added:"  # + the group id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS taskq_kv (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,             -- epoch seconds; NULL = never
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS taskq_kv_expires ON taskq_kv (expires_at);
CREATE TABLE IF NOT EXISTS taskq_chord_members (
    group_id TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, task_id)
);
"""

_UPSERT = """
INSERT INTO taskq_kv (kind, key, value, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_DELETE = "DELETE FROM taskq_kv WHERE kind = ? AND key = ?"


class SQLiteStore(ResultStore):
    """A result store in an SQLite file (`sqlite:///rel.db`, `sqlite:////abs.db`)."""

    def __init__(self, url: str, conf: Settings) -> None:
        self._options = StoreOptions.read(conf, SQLITE_OPTIONS)
        self._db = Database.configured(sqlite_path(url), _SCHEMA, self._options.transport)
        self._scope = str(self._db.path)
        self._next_purge = 0.0

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def set_state(self, task_id: str, meta: TaskMeta, ttl: float | None) -> None:
        await self.set_states([meta], ttl)

    async def set_states(self, metas: Sequence[TaskMeta], ttl: float | None) -> None:
        rows = [(_META, meta.task_id, meta.encode()) for meta in metas]
        await self._write(lambda conn: _put(conn, rows, ttl))
        for meta in metas:
            announce_ready(self._scope, meta)

    async def get(self, task_id: str) -> TaskMeta | None:
        raw = await self._run(lambda conn: _get_live(conn, _META, task_id))
        return None if raw is None else TaskMeta.decode(raw)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskMeta | None]:
        ids = list(task_ids)
        found = await self._run(lambda conn: _get_many_live(conn, _META, ids))
        return [None if found.get(i) is None else TaskMeta.decode(found[i]) for i in ids]

    async def wait(self, task_id: str, timeout: float | None) -> TaskMeta:
        poll = self._options.polling_interval
        return await wait_until_ready(self._scope, task_id, self.get, timeout, poll)

    async def forget(self, task_id: str) -> None:
        await self._write(lambda conn: conn.execute(_DELETE, (_META, task_id)))

    async def chord_part_done(self, group_id: str, task_id: str, size: int) -> bool:
        return await self._write(lambda conn: _chord_part_done(conn, group_id, task_id, size))

    async def chord_add_member(self, group_id: str, token: str, task_id: str) -> Added:
        return await self._write(lambda conn: _chord_add_member(conn, group_id, token, task_id))

    async def chord_added(self, group_id: str) -> list[str]:
        return await self._run(lambda conn: _chord_added(conn, group_id))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        return await self._write(lambda conn: _claim(conn, _KEY, key, value, ttl, renewer=None))

    async def set_key(self, key: str, value: bytes, ttl: float | None) -> None:
        await self._write(lambda conn: _put(conn, [(_KEY, key, value)], ttl))

    async def get_key(self, key: str) -> bytes | None:
        return await self._run(lambda conn: _get_live(conn, _KEY, key))

    async def delete_key(self, key: str) -> None:
        await self._write(lambda conn: conn.execute(_DELETE, (_KEY, key)))

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        holder = owner.encode()
        return await self._write(lambda conn: _claim(conn, _LEASE, name, holder, ttl, holder))

    async def lease_remaining(self, name: str) -> float | None:
        return await self._run(lambda conn: _remaining(conn, _LEASE, name))

    async def lease_holder(self, name: str) -> str | None:
        found = await self._run(lambda conn: _get_many_live(conn, _LEASE, [name]))
        return found[name].decode() if name in found else None

    async def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        rows = [(_REVOKED, task_id, b"") for task_id in task_ids]
        await self._write(lambda conn: _put(conn, rows, ttl))

    async def revoked(self, task_ids: Sequence[str]) -> set[str]:
        ids = orjson.dumps(list(task_ids)).decode()
        return await self._run(lambda conn: _revoked(conn, ids))

    async def all_revoked(self) -> set[str]:
        return await self._run(_all_revoked)

    async def _run(self, call: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(call)

    async def _write(self, call: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write, then sweep expired rows if this store's sweep is due."""
        result = await self._run(call)
        if time.monotonic() >= self._next_purge:
            more = await self._run(_purge_expired)
            self._next_purge = 0.0 if more else time.monotonic() + PURGE_INTERVAL
        return result


def _expiry(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl


def _put(conn: sqlite3.Connection, rows: list[tuple[str, str, bytes]], ttl: float | None) -> None:
    expires_at = _expiry(ttl)
    conn.executemany(_UPSERT, [(*row, expires_at) for row in rows])


def _get_live(conn: sqlite3.Connection, kind: str, key: str) -> bytes | None:
    sql = f"SELECT value FROM taskq_kv WHERE kind = ? AND key = ? AND {_LIVE}"
    row = conn.execute(sql, (kind, key, time.time())).fetchone()
    return None if row is None else bytes(row[0])


def _remaining(conn: sqlite3.Connection, kind: str, key: str) -> float | None:
    now = time.time()
    sql = f"SELECT expires_at FROM taskq_kv WHERE kind = ? AND key = ? AND {_LIVE}"
    row = conn.execute(sql, (kind, key, now)).fetchone()
    if row is None:
        return None
    return float("inf") if row[0] is None else float(row[0]) - now


def _get_many_live(conn: sqlite3.Connection, kind: str, keys: list[str]) -> dict[str, bytes]:
    sql = (
        "SELECT key, value FROM taskq_kv WHERE kind = ? AND key IN"
        f" (SELECT value FROM json_each(?)) AND {_LIVE}"
    )
    rows = conn.execute(sql, (kind, orjson.dumps(keys).decode(), time.time())).fetchall()
    return {str(key): bytes(value) for key, value in rows}


def _claim(
    conn: sqlite3.Connection, kind: str, key: str, value: bytes, ttl: float, renewer: bytes | None
) -> bool:
    """Set the entry if it is absent or expired, or if its live value is `renewer`.

    One statement, so it is atomic across processes; a renewer of None matches nothing.
    """
    sql = f"{_UPSERT} WHERE taskq_kv.expires_at <= ? OR taskq_kv.value = ?"
    cursor = conn.execute(sql, (kind, key, value, _expiry(ttl), time.time(), renewer))
    return cursor.rowcount == 1


def _revoked(conn: sqlite3.Connection, ids_json: str) -> set[str]:
    sql = (
        "SELECT key FROM taskq_kv WHERE kind = ? AND key IN (SELECT value FROM json_each(?))"
        f" AND {_LIVE}"
    )
    rows = conn.execute(sql, (_REVOKED, ids_json, time.time())).fetchall()
    return {str(row[0]) for row in rows}


def _all_revoked(conn: sqlite3.Connection) -> set[str]:
    sql = f"SELECT key FROM taskq_kv WHERE kind = ? AND {_LIVE}"
    rows = conn.execute(sql, (_REVOKED, time.time()))
    return {str(row[0]) for row in rows}


def _chord_part_done(conn: sqlite3.Connection, group_id: str, task_id: str, size: int) -> bool:
    # IMMEDIATE takes the write lock up front, so the count and the "done" mark
    # cannot interleave with another process's.
    with transaction(conn):
        if _get_live(conn, _CHORD_DONE, group_id) is not None:
            return False
        conn.execute(
            "INSERT OR IGNORE INTO taskq_chord_members (group_id, task_id) VALUES (?, ?)",
            (group_id, task_id),
        )
        sql = "SELECT count(*) FROM taskq_chord_members WHERE group_id = ?"
        if conn.execute(sql, (group_id,)).fetchone()[0] < size + _added_count(conn, group_id):
            return False
        conn.execute("DELETE FROM taskq_chord_members WHERE group_id = ?", (group_id,))
        _put(conn, [(_CHORD_DONE, group_id, b"")], CHORD_RETENTION)
        return True


def _added_count(conn: sqlite3.Connection, group_id: str) -> int:
    sql = f"SELECT count(*) FROM taskq_kv WHERE kind = ? AND {_LIVE}"
    return int(conn.execute(sql, (_CHORD_ADDED + group_id, time.time())).fetchone()[0])


def _chord_add_member(conn: sqlite3.Connection, group_id: str, token: str, task_id: str) -> Added:
    with transaction(conn):  # the count and the insert, with no other writer in between
        kind = _CHORD_ADDED + group_id
        found = _get_live(conn, kind, token)
        if found is not None:
            return Added.decode(found)
        added = Added(_added_count(conn, group_id), task_id)
        _put(conn, [(kind, token, added.encode().encode())], CHORD_RETENTION)
        return added


def _chord_added(conn: sqlite3.Connection, group_id: str) -> list[str]:
    sql = f"SELECT value FROM taskq_kv WHERE kind = ? AND {_LIVE}"
    rows = conn.execute(sql, (_CHORD_ADDED + group_id, time.time())).fetchall()
    added = sorted(Added.decode(bytes(row[0])) for row in rows)
    return [member.task_id for member in added]


def _purge_expired(conn: sqlite3.Connection) -> bool:
    """Delete a batch of expired rows; True if more may remain."""
    sql = (
        "DELETE FROM taskq_kv WHERE rowid IN"
        " (SELECT rowid FROM taskq_kv WHERE expires_at <= ? LIMIT ?)"
    )
    return conn.execute(sql, (time.time(), PURGE_BATCH)).rowcount == PURGE_BATCH
