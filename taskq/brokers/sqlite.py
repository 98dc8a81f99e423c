"""The SQLite broker: the embedded default, durable and safe for several processes.

Messages live in one table. A message is available when `available_at` has passed;
claiming one moves `available_at` forward by the visibility timeout and stamps a
fresh lease token, in a single UPDATE, so two processes never claim the same row
and a lease that is not renewed simply runs out. Acks, nacks and extensions match
on (id, token), so a stale holder cannot touch the new holder's lease.

SQLite cannot push, so idle consumers poll with backoff; a publish in this process
wakes the consumers of the same file at once. Every SQLite call runs in a worker
thread, one at a time per connection.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from functools import partial
from typing import Any, TypeVar, TypeVarTuple

from taskq.brokers.base import Broadcasts, Broker, DeadLetter, Delivery, Scheduled
from taskq.brokers.leases import (
    Claimed,
    Lease,
    Outgoing,
    Subscription,
    channel_key,
    consume_leases,
    outgoing,
)
from taskq.config import Settings
from taskq.message import Message
from taskq.sqlite_db import OPTIONS as SQLITE_OPTIONS
from taskq.sqlite_db import Database, transaction
from taskq.urls import sqlite_path
from taskq.wakeups import wake

BROADCAST_RETENTION = 60.0

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS taskq_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    -- due time, or the end of the current lease (epoch seconds; the default is "now")
    available_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    lease INTEGER,                  -- token of the last claim, NULL once requeued
    delivery_count INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS taskq_messages_claim
    ON taskq_messages (queue, priority DESC, id, available_at);
CREATE TABLE IF NOT EXISTS taskq_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS taskq_dead_letters_queue ON taskq_dead_letters (queue, id);
CREATE TABLE IF NOT EXISTS taskq_broadcasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS taskq_broadcasts_channel ON taskq_broadcasts (channel, id);
"""

_CLAIM = """
UPDATE taskq_messages
SET available_at = ?, lease = ?, delivery_count = delivery_count + 1
WHERE id IN (
    SELECT id FROM taskq_messages
    WHERE queue IN ({marks}) AND available_at <= ?
    ORDER BY priority DESC, id
    LIMIT ?
)
RETURNING id, queue, priority, body, delivery_count
"""
_ANY_DUE = "SELECT 1 FROM taskq_messages WHERE queue IN ({marks}) AND available_at <= ? LIMIT 1"
_MALFORMED = """
SELECT id, queue, priority, available_at, body FROM taskq_messages
WHERE queue IN ({marks}) AND (
    typeof(priority) != 'integer' OR typeof(available_at) NOT IN ('integer', 'real')
    OR typeof(body) != 'blob'
)
LIMIT 1000
"""
_DELETE = "DELETE FROM taskq_messages WHERE id = ?"
_NEXT_DUE = "SELECT min(available_at) FROM taskq_messages WHERE queue IN ({marks})"
_INSERT = "INSERT INTO taskq_messages (queue, priority, available_at, body) VALUES (?, ?, ?, ?)"
_ACK = "DELETE FROM taskq_messages WHERE id = ? AND lease = ?"
_REQUEUE = """
UPDATE taskq_messages SET available_at = ?, lease = NULL, delivery_count = delivery_count - ?
WHERE id = ? AND lease = ?
"""
_EXTEND = "UPDATE taskq_messages SET available_at = ? WHERE id = ? AND lease = ?"
_TAKE = "DELETE FROM taskq_messages WHERE id = ? AND lease = ? RETURNING body"
_BURY = "INSERT INTO taskq_dead_letters (queue, reason, body, failed_at) VALUES (?, ?, ?, ?)"
# A message whose lease ran out is as good as waiting, so purge takes it too.
_PURGE = "DELETE FROM taskq_messages WHERE queue = ? AND (lease IS NULL OR available_at <= ?)"
_LENGTH = "SELECT count(*) FROM taskq_messages WHERE queue = ?"
_NOT_DUE = "FROM taskq_messages WHERE queue = ? AND lease IS NULL AND available_at > ?"
_SCHEDULED = f"SELECT body, available_at {_NOT_DUE} ORDER BY available_at, id LIMIT ?"
_SCHEDULED_LENGTH = f"SELECT count(*) {_NOT_DUE}"
_DEAD_LETTERS = """
SELECT id, queue, reason, body, failed_at FROM taskq_dead_letters
WHERE queue = ? ORDER BY id LIMIT ?
"""
_DEAD_LETTER_LENGTH = "SELECT count(*) FROM taskq_dead_letters WHERE queue = ?"
_PURGE_DEAD_LETTERS = "DELETE FROM taskq_dead_letters WHERE queue = ?"
_EXPIRE_BROADCASTS = "DELETE FROM taskq_broadcasts WHERE created_at < ?"
_BROADCAST = "INSERT INTO taskq_broadcasts (channel, payload, created_at) VALUES (?, ?, ?)"
_BROADCASTS_AFTER = """
SELECT id, payload FROM taskq_broadcasts
WHERE channel = ? AND id > ? AND created_at >= ? ORDER BY id
"""


def _insert(conn: sqlite3.Connection, messages: list[Outgoing]) -> None:
    rows = [(m.queue, m.priority, m.available_at, m.body) for m in messages]
    with transaction(conn):
        conn.executemany(_INSERT, rows)


def _claim(
    conn: sqlite3.Connection, queues: list[str], limit: int, lease_seconds: float
) -> tuple[list[Claimed], float | None]:
    now = time.time()
    token = secrets.randbits(63)
    marks = ", ".join("?" * len(queues))
    params = (now + lease_seconds, token, *queues, now, limit)
    # Looked for first: a poll that finds nothing due only reads, so an idle worker never
    # holds the write lock that producers and other workers wait on.
    due_now = conn.execute(_ANY_DUE.format(marks=marks), (*queues, now)).fetchone()
    rows = [] if due_now is None else conn.execute(_CLAIM.format(marks=marks), params).fetchall()
    # `now` stands for available_at, which the claim has just set to the lease's end.
    malformed = [
        (id_, queue, problem, body)
        for id_, queue, priority, body, _ in rows
        if (problem := _problem(priority, now, body))
    ]
    if malformed:
        _bury_malformed(conn, malformed)
        buried = {row[0] for row in malformed}
        rows = [row for row in rows if row[0] not in buried]
    if not rows:
        (due,) = conn.execute(_NEXT_DUE.format(marks=marks), queues).fetchone()
        if due is not None and type(due) not in (int, float):  # only rows due at no time left
            _bury_malformed(conn, _malformed(conn, marks, queues))
            return [], 0.0
        return [], (None if due is None else due - now)
    rows.sort(key=lambda row: (-row[2], row[0]))  # RETURNING comes in no particular order
    return [
        Claimed(Lease(queue, id_, token), body, count) for id_, queue, _, body, count in rows
    ], None


def _problem(priority: object, available_at: object, body: object) -> str | None:
    """What makes a row no message (written by hand or by another program), if anything."""
    if type(priority) is not int:
        return f"priority {priority!r:.80} is not an integer"
    if type(available_at) not in (int, float):
        return f"available_at {available_at!r:.80} is not a time"
    if type(body) is not bytes:
        return f"body is {type(body).__name__}, not a BLOB"
    return None


def _malformed(
    conn: sqlite3.Connection, marks: str, queues: list[str]
) -> list[tuple[int, str, str, object]]:
    rows = conn.execute(_MALFORMED.format(marks=marks), queues).fetchall()
    return [(id_, queue, _problem(p, at, body) or "", body) for id_, queue, p, at, body in rows]


def _bury_malformed(conn: sqlite3.Connection, rows: list[tuple[int, str, str, object]]) -> None:
    """Move malformed rows to the dead letters, their body as it was (as bytes) with why."""
    with transaction(conn):
        for id_, queue, problem, body in rows:
            raw = body if isinstance(body, bytes) else str(body).encode()
            conn.execute(_DELETE, (id_,))
            conn.execute(_BURY, (queue, f"malformed broker entry: {problem}", raw, time.time()))


def _ack(conn: sqlite3.Connection, lease: Lease) -> None:
    conn.execute(_ACK, (lease.id, lease.token))


def _requeue(conn: sqlite3.Connection, lease: Lease, delay: float, delivered: bool) -> None:
    params = (time.time() + delay, 0 if delivered else 1, lease.id, lease.token)
    conn.execute(_REQUEUE, params)


def _extend(conn: sqlite3.Connection, lease: Lease, seconds: float) -> None:
    conn.execute(_EXTEND, (time.time() + seconds, lease.id, lease.token))


def _dead_letter(conn: sqlite3.Connection, lease: Lease, reason: str) -> None:
    with transaction(conn):
        rows = conn.execute(_TAKE, (lease.id, lease.token)).fetchall()
        if rows:
            conn.execute(_BURY, (lease.queue, reason, rows[0][0], time.time()))


def _scalar(conn: sqlite3.Connection, sql: str, *params: object) -> int:
    (value,) = conn.execute(sql, params).fetchone()
    return int(value)


def _rows(conn: sqlite3.Connection, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def _changes(conn: sqlite3.Connection, sql: str, *params: object) -> int:
    return conn.execute(sql, params).rowcount


def _dead_letters(conn: sqlite3.Connection, queue: str, limit: int) -> list[DeadLetter]:
    rows = conn.execute(_DEAD_LETTERS, (queue, limit)).fetchall()
    return [DeadLetter(str(id_), *rest) for id_, *rest in rows]


def _remove_dead_letters(conn: sqlite3.Connection, queue: str, ids: list[int]) -> int:
    marks = ", ".join("?" * len(ids))
    sql = f"DELETE FROM taskq_dead_letters WHERE queue = ? AND id IN ({marks})"
    return conn.execute(sql, (queue, *ids)).rowcount


def _broadcast(conn: sqlite3.Connection, channel: str, payload: bytes) -> None:
    now = time.time()
    with transaction(conn):
        conn.execute(_EXPIRE_BROADCASTS, (now - BROADCAST_RETENTION,))
        conn.execute(_BROADCAST, (channel, payload, now))


def _broadcasts_after(
    conn: sqlite3.Connection, channel: str, after_id: int, since: float
) -> list[tuple[int, bytes]]:
    return conn.execute(_BROADCASTS_AFTER, (channel, after_id, since)).fetchall()


class SQLiteBroker(Broker):
    """A broker in one SQLite file, shared by every process that opens it.

    Its own transport options (`sqlite_db.OPTIONS`): `busy_timeout` (seconds to wait for
    another process's write lock, default 10) and `synchronous` (SQLite's setting, default
    NORMAL: in WAL mode durable across process crashes, not power loss; FULL for that).
    """

    OPTIONS = SQLITE_OPTIONS

    def __init__(self, url: str, conf: Settings) -> None:
        super().__init__(url, conf)
        self._db = Database.configured(sqlite_path(url), _SCHEMA, self.transport)
        self._key = str(self._db.path)

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        messages = outgoing(items, self.options)
        await self._run(_insert, messages)
        wake(self._key)

    def _consume(self, queues: list[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        claim = partial(self._claim, queues)
        return consume_leases(self, claim, self._key, prefetch, self.options.polling_interval)

    async def queue_length(self, queue: str) -> int:
        return await self._run(_scalar, _LENGTH, queue)

    async def scheduled(self, queue: str, limit: int = 100) -> list[Scheduled]:
        rows = await self._run(_rows, _SCHEDULED, queue, time.time(), limit)
        return [Scheduled(body, due_at) for body, due_at in rows]

    async def scheduled_length(self, queue: str) -> int:
        return await self._run(_scalar, _SCHEDULED_LENGTH, queue, time.time())

    async def purge(self, queue: str) -> int:
        return await self._run(_changes, _PURGE, queue, time.time())

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return await self._run(_dead_letters, queue, limit)

    async def dead_letter_length(self, queue: str) -> int:
        return await self._run(_scalar, _DEAD_LETTER_LENGTH, queue)

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        await self._run(_changes, _BURY, queue, reason, body, time.time())

    async def remove_dead_letters(self, queue: str, ids: Sequence[str]) -> int:
        numeric = [int(id_) for id_ in ids if id_.isdigit()]
        return await self._run(_remove_dead_letters, queue, numeric) if numeric else 0

    async def purge_dead_letters(self, queue: str) -> int:
        return await self._run(_changes, _PURGE_DEAD_LETTERS, queue)

    async def broadcast(self, channel: str, payload: bytes) -> None:
        await self._run(_broadcast, channel, payload)
        wake(channel_key(self._key, channel))

    def subscribe(self, channel: str) -> Broadcasts:
        return _SQLiteSubscription(self, channel)

    # LeaseStore

    async def ack_lease(self, lease: Lease) -> None:
        await self._run(_ack, lease)

    async def requeue_lease(
        self, lease: Lease, delay: float | None, *, delivered: bool = True
    ) -> None:
        await self._run(_requeue, lease, delay or 0.0, delivered)
        wake(self._key)

    async def dead_letter_lease(self, lease: Lease, reason: str) -> None:
        await self._run(_dead_letter, lease, reason)

    async def extend_lease(self, lease: Lease, seconds: float) -> None:
        await self._run(_extend, lease, seconds)

    async def _claim(self, queues: list[str], limit: int) -> tuple[list[Claimed], float | None]:
        return await self._run(_claim, queues, limit, self.options.visibility_timeout)

    async def _run(self, call: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        return await self._db.run(call, *args)


class _SQLiteSubscription(Subscription):
    """Reads `taskq_broadcasts` from the moment it was created, by row id after that."""

    def __init__(self, broker: SQLiteBroker, channel: str) -> None:
        super().__init__(channel_key(broker._key, channel), broker.options.polling_interval)
        self._broker = broker
        self._channel = channel
        self._since = time.time()
        self._last_id = 0

    async def _poll(self) -> list[bytes]:
        rows = await self._broker._run(_broadcasts_after, self._channel, self._last_id, self._since)
        if rows:
            self._last_id = rows[-1][0]
        return [payload for _, payload in rows]
