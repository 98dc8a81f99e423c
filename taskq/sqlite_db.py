"""One SQLite connection used from async code: the SQLite broker's and result store's.

Calls run in a worker thread, one at a time per connection, so the event loop never
blocks on disk or on another process's write lock. The file is in WAL mode, so
readers and one writer from any number of processes work side by side.

Imports nothing of taskq but `errors`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

from taskq.errors import ConfigurationError, NotConnectedError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

DEFAULT_BUSY_TIMEOUT = 10.0
DEFAULT_SYNCHRONOUS = "NORMAL"
SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
OPTIONS = frozenset({"busy_timeout", "synchronous"})  # transport options of broker and store


class Database:
    """A connection to `path` whose `schema` (idempotent SQL) is applied on `open()`.

    `synchronous` is SQLite's setting: NORMAL (the default) in WAL mode survives a
    process crash but not a power loss; FULL survives both.
    """

    def __init__(
        self,
        path: Path,
        schema: str,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        synchronous: str = DEFAULT_SYNCHRONOUS,
    ) -> None:
        self.path = path.resolve()
        self._schema = schema
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous.upper()
        if self._synchronous not in SYNCHRONOUS_MODES:
            raise ConfigurationError(f"bad SQLite synchronous mode {synchronous!r}")
        self._conn: sqlite3.Connection | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @classmethod
    def configured(cls, path: Path, schema: str, options: dict[str, Any]) -> Database:
        """A database with `busy_timeout` and `synchronous` from transport `options`."""
        try:
            busy_timeout = float(options.get("busy_timeout", DEFAULT_BUSY_TIMEOUT))
        except (TypeError, ValueError):
            raise ConfigurationError("busy_timeout must be a number of seconds") from None
        synchronous = str(options.get("synchronous", DEFAULT_SYNCHRONOUS))
        return cls(path, schema, busy_timeout=busy_timeout, synchronous=synchronous)

    async def open(self) -> None:
        if self._conn is None:
            # Made here, not in __init__, so that it belongs to the loop that uses it.
            self._limiter = anyio.CapacityLimiter(1)
            self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def run(self, call: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """`call(connection, *args)` in the connection's thread."""
        if self._conn is None:
            raise NotConnectedError(f"the SQLite database {self.path} is not open")
        return await anyio.to_thread.run_sync(call, self._conn, *args, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: each statement commits by itself unless we BEGIN explicitly.
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            _enable_wal(conn, self._busy_timeout)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            # One transaction, so that processes opening a new file do not interleave.
            conn.executescript(f"BEGIN IMMEDIATE;\n{self._schema}\nCOMMIT;")
        except BaseException:
            conn.close()
            raise
        return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    # Switching to WAL needs an exclusive lock and may fail at once, without waiting
    # on the busy timeout, while another process opens the same new file.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error).

    IMMEDIATE takes the write lock up front, so the busy timeout applies, instead of a
    deferred transaction failing when it tries to upgrade from a stale snapshot.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
