"""The Redis connection shared by the Redis broker and result store.

URL and transport options, one client (and connection pool) per URL and event loop
in a process, Lua scripts run by SHA with recovery from an emptied script cache,
and retries with backoff while Redis is unreachable.

A first connection that fails is one line: a refused login (`LoginRefusedError`, which
retrying cannot mend) or Redis unreachable (`BrokerUnavailable`).

Imports nothing of taskq but `deadlines`, `errors`, `tls` and `urls`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.lowlevel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry
from redis.utils import check_protocol_version

from taskq.deadlines import Deadlines
from taskq.errors import (
    BrokerUnavailable,
    ConfigurationError,
    LoginRefusedError,
    NotConnectedError,
    TaskQError,
)
from taskq.tls import TLSOptions, tls_error
from taskq.urls import alternatives, masked_url

T = TypeVar("T")

DEFAULT_PREFIX = "taskq:"
DEFAULT_RECONNECT_TIMEOUT = 60.0
CLUSTER_OPTION = "cluster"
PREFIX_OPTION = "prefix"
_OWN_PARAMETERS = frozenset({CLUSTER_OPTION, PREFIX_OPTION})  # taken out of the URL for redis-py
OPTIONS = frozenset({*_OWN_PARAMETERS, "reconnect_timeout"})  # transport options, broker and store
CONNECT_TIMEOUT = 5.0
# A reply slower than this (a hung Redis) is a transient error. Enforced around each round
# trip here, not as redis-py's socket_timeout, which costs ~70 µs on every read.
COMMAND_TIMEOUT = 30.0
# Not asyncio.timeout (a timer per command, a fifth of a lone command's CPU): see `deadlines`.
_DEADLINES = Deadlines(COMMAND_TIMEOUT, resolution=1.0)
# Commands whose reply redis-py hands back unchanged (no response callback): see `_execute`.
_RAW_REPLIES = frozenset({"EVALSHA", "GET"})
# How uvloop words a write on a transport that is closed already (see `_send`).
_CLOSED_TRANSPORT = "the handler is closed"
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0

# Redis is unreachable, restarting (LOADING is a ConnectionError) or a cluster is failing over.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

logger = logging.getLogger("taskq.redis")

Client = Redis | RedisCluster
Command = tuple[Any, ...]

# The idle connections of each plain client with no `broker_pool_limit`, taken out of its pool
# for good (they stay its own: closing the client closes them). Not with a limit: a pipeline
# would wait for the connections kept here.
_Lane = tuple[ConnectionPool, list[AbstractConnection]]
_LANES: weakref.WeakKeyDictionary[Client, _Lane] = weakref.WeakKeyDictionary()


def _flag(value: object, name: str) -> bool:
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ConfigurationError(f"{name} must be true or false, not {value!r}")
    return text in _TRUE


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where and how to connect: `redis://[:password@]host:port/db`, `rediss://` for TLS.

    Transport options: `prefix` of every key and channel (default `taskq:`), `cluster`
    (true for Redis Cluster) and `reconnect_timeout` (seconds an operation keeps retrying
    while Redis is unreachable before it raises, default 60). `prefix` and `cluster` may
    also be URL parameters: `redis://host:7000/0?cluster=true&prefix=shop:`.
    """

    url: str  # the first node's
    nodes: tuple[tuple[str, int], ...] = ()  # every startup node, the URL's first
    cluster: bool = False
    prefix: str = DEFAULT_PREFIX
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT
    max_connections: int | None = None  # `broker_pool_limit`: None for as many as needed
    tls: TLSOptions | None = None  # `broker_use_ssl` / `redis_backend_use_ssl`, for rediss://

    @classmethod
    def parse(
        cls,
        url: str,
        transport: dict[str, Any] | None,
        max_connections: int | None = None,
        tls: TLSOptions | None = None,
    ) -> RedisSettings:
        """Settings from the URL, whose `cluster` and `prefix` parameters win over `transport`.

        A cluster's URL may name several startup nodes, `redis://n1:7000,n2:7001/0`, or be a
        fail-over list of URLs that differ only in their `host:port`s, `redis://n1:7000/0;
        redis://n2:7001/0`: any one of them that answers will do.
        """
        first, nodes = _startup_nodes(url)
        parts = urlsplit(first)
        query = parse_qsl(parts.query, keep_blank_values=True)
        options = {**(transport or {}), **{k: v for k, v in query if k in _OWN_PARAMETERS}}
        cluster = _flag(options.get(CLUSTER_OPTION, False), CLUSTER_OPTION)
        if len(nodes) > 1 and not cluster:
            raise ConfigurationError(
                f"several Redis nodes in {masked_url(url)!r} need ?cluster=true (Redis Cluster;"
                " taskq does not support Redis Sentinel)"
            )
        prefix = options.get(PREFIX_OPTION, DEFAULT_PREFIX)
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"the Redis key prefix must be a string without braces: {prefix!r}"
            )
        if cluster and parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError(f"Redis Cluster has only database 0: {masked_url(url)!r}")
        if cluster and max_connections is not None:
            raise ConfigurationError(
                "broker_pool_limit is not supported with Redis Cluster: a client there opens"
                " connections per node as it needs them"
            )
        rest = urlencode([(k, v) for k, v in query if k not in _OWN_PARAMETERS])
        return cls(
            url=urlunsplit(parts._replace(query=rest)),
            nodes=nodes,
            cluster=cluster,
            prefix=prefix,
            reconnect_timeout=float(options.get("reconnect_timeout", DEFAULT_RECONNECT_TIMEOUT)),
            max_connections=max_connections,
            tls=tls,
        )


def _startup_nodes(url: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """The URL of the first node named, and every `(host, port)` named (see `parse`)."""
    first: str | None = None
    shared: set[tuple[str, str, str, str]] = set()  # what the URLs must have in common
    nodes: list[tuple[str, int]] = []
    for alternative in alternatives(url):
        parts = urlsplit(alternative)
        login, at, hosts = parts.netloc.rpartition("@")
        shared.add((parts.scheme, login, parts.path, parts.query))
        for host in hosts.split(","):
            address = urlsplit(f"//{host}")
            if not address.hostname:
                raise ConfigurationError(f"a Redis node without a host in {masked_url(url)!r}")
            nodes.append((address.hostname, address.port or 6379))
            first = first or urlunsplit(parts._replace(netloc=f"{login}{at}{host}"))
    if len(shared) > 1:
        raise ConfigurationError(
            f"the Redis URLs {masked_url(url)!r} differ in more than their host:port"
        )
    if first is None:
        raise ConfigurationError("the Redis URL is empty")
    return first, tuple(nodes)


_on_written: ContextVar[Callable[[], None] | None] = ContextVar("taskq_on_written", default=None)


@contextmanager
def when_written(callback: Callable[[], None]) -> Iterator[None]:
    """Within this block, `callback()` runs each time a command has been written to a
    connection (handed to the socket, its reply still to come). Only on taskq's own
    connection class: for a connection redis-py chooses (rediss://, unix://) it never runs."""
    token = _on_written.set(callback)
    try:
        yield
    finally:
        _on_written.reset(token)


class _Connection(Connection):
    """redis-py's connection with a linear `pack_command`: redis-py re-joins a growing buffer
    for every argument, which made packing the long argument lists of batched script calls
    most of a worker's Redis client time. Same bytes on the wire. It also tells `when_written`
    callbacks that a command went out."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        await super().send_packed_command(command, check_health)
        callback = _on_written.get()
        if callback is not None:
            callback()

    def pack_command(self, *args: Any) -> list[bytes]:
        if not isinstance(args[0], str) or " " in args[0]:  # "SCRIPT LOAD" and the like
            return super().pack_command(*args)
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            kind = type(arg)  # exact types: a publish has some twenty arguments to pack
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            else:
                return super().pack_command(*args)
            parts += (b"$%d\r\n" % len(data), data, b"\r\n")
        return [b"".join(parts)]


MAX_CONNECTIONS = 10_000


def _client_options(tls: TLSOptions | None) -> dict[str, Any]:
    # No retries inside redis-py: `retrying` retries with backoff and logs the outage.
    return {
        **(tls.redis_options() if tls is not None else {}),
        "connection_class": _Connection,  # redis-py puts its own for rediss:// and unix://
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": None,  # redis-py 8 defaults to 5 s; COMMAND_TIMEOUT is enforced here
        "socket_keepalive": True,
        # redis-py's default of 100 fails calls outright ("Too many connections") when
        # a worker's task loops all write at once; connections are made only as needed.
        "max_connections": MAX_CONNECTIONS,
    }


class RedisConnection:
    """A client and its connection pool, shared by every broker and store of one
    process and event loop that use the same settings, and the connections of pub/sub: with
    Redis Cluster each on one live node after another (a PUBLISH reaches subscribers on every
    node, so any will do, and the next one is tried when one is lost); otherwise on a client
    of their own (`node`), so that a `broker_pool_limit` capping the commands' connections
    cannot starve them."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.client: Client
        self.node: Redis | None = None
        if settings.cluster:
            others = [ClusterNode(host, port) for host, port in settings.nodes[1:]]
            self.client = RedisCluster.from_url(
                settings.url, startup_nodes=others, **_client_options(settings.tls)
            )
        else:
            self.node = self.client = Redis.from_url(settings.url, **_client_options(settings.tls))
        if settings.max_connections is not None and self.node is not None:
            # Commands wait for one of at most `max_connections` connections; subscriptions
            # (one connection each, held for good) stay on `node`, so they cannot starve them.
            pool = BlockingConnectionPool.from_url(
                settings.url,
                **{**_client_options(settings.tls), "max_connections": settings.max_connections},
                timeout=None,
            )
            self.client = Redis(connection_pool=pool)
            self.client.auto_close_connection_pool = True
        elif self.node is not None:
            _LANES[self.node] = (self.node.connection_pool, [])
        # A subscribed connection answers other commands too: RESP3 (redis-py's default) on
        # one server; on a cluster a key may live on another node than the subscription.
        self.commands_when_subscribed = self.node is not None and check_protocol_version(
            self.node.connection_pool.connection_kwargs.get("protocol"), 3
        )
        self.users = 0
        self.outage = Outage()
        self._subscribed = 0  # pub/sub connections made: which cluster node is next

    def pubsub(self) -> PubSub:
        if self.node is not None:
            return self.node.pubsub(push_handler_func=_pushed)
        assert isinstance(self.client, RedisCluster)
        nodes = self.client.get_nodes()  # as of the last topology refresh
        self._subscribed += 1
        node = nodes[self._subscribed % len(nodes)] if nodes else None
        return self.client.pubsub(node=node, push_handler_func=_pushed)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.node is not None and self.node is not self.client:
            await self.node.aclose()


async def _pushed(reply: Any) -> Any:
    """A pub/sub message as it came (redis-py's default handler formats each one for a
    debug log first)."""
    return reply


_connections: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[RedisSettings, RedisConnection]
] = weakref.WeakKeyDictionary()


class SharedConnection:
    """A handle on the process's connection for `settings`: `open()` joins it, `close()` leaves."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._connection: RedisConnection | None = None

    @property
    def connection(self) -> RedisConnection:
        if self._connection is None:
            raise NotConnectedError("the Redis connection is not open: call connect() first")
        return self._connection

    def open(self) -> RedisConnection:
        if self._connection is None:
            shared = _connections.setdefault(asyncio.get_running_loop(), {})
            connection = shared.get(self.settings)
            if connection is None:
                connection = shared[self.settings] = RedisConnection(self.settings)
            connection.users += 1
            self._connection = connection
        return self._connection

    async def open_with(self, scripts: Scripts) -> None:
        """`open()`, then load `scripts` on the server (leaving again if that fails); a
        refused login or an unreachable Redis is raised as one line (`connect_error`).

        A cluster is given `CONNECT_TIMEOUT`: the first failure on a master that is gone
        refreshes the client's view of the cluster, and the next attempt loads on the live
        masters."""
        connection = self.open()
        patience = CONNECT_TIMEOUT if self.settings.cluster else 0.0
        try:
            await retrying(
                lambda: scripts.load(connection.client), patience, "connecting", connection.outage
            )
        except BaseException as exc:
            await self.close()
            explained = connect_error(self.settings.url, exc)
            if explained is None:
                raise
            raise explained from None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.users -= 1
        if connection.users == 0:
            shared = _connections.get(asyncio.get_running_loop(), {})
            if shared.get(self.settings) is connection:
                del shared[self.settings]
            await connection.aclose()


def connect_error(url: str, exc: BaseException) -> TaskQError | None:
    """What a failed first connection to Redis at `url` means, in one line; None for an
    error that is not about connecting (it is raised as it is)."""
    if isinstance(exc, RedisClusterException):  # no node of the cluster answered
        exc = exc.__cause__ or exc
    tls = tls_error(f"Redis at {masked_url(url)}", exc)
    if tls is not None:
        return tls
    if isinstance(exc, AuthenticationError):
        parts = urlsplit(url)
        if parts.password is None:
            return LoginRefusedError(
                "Redis requires a password: put it in the URL "
                f"({parts.scheme}://:password@host:port/db)"
            )
        return LoginRefusedError(
            f"Redis refused the login for user {parts.username or 'default'!r}"
        )
    if isinstance(exc, TRANSIENT_ERRORS):
        return BrokerUnavailable(f"Redis at {masked_url(url)} is unreachable: {exc}")
    return None


class Scripts:
    """The Lua scripts of one file, run by SHA.

    The file is split at lines `--@ name`; the section named `common` (helpers) is
    prepended to every other one. A script missing from the server's cache (after a
    restart or failover) is loaded and its call sent again.
    """

    def __init__(self, package: str, resource: str) -> None:
        sections: dict[str, list[str]] = {"": []}
        current = ""
        for line in files(package).joinpath(resource).read_text().splitlines():
            if line.startswith("--@ "):
                current = line[4:].strip()
                sections[current] = []
            sections[current].append(line)
        common = "\n".join(sections.pop("common", []))
        del sections[""]
        self._sources = {name: f"{common}\n" + "\n".join(body) for name, body in sections.items()}
        self._shas = {
            name: hashlib.sha1(source.encode()).hexdigest()
            for name, source in self._sources.items()
        }

    def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    async def load(self, client: Client) -> None:
        for source in self._sources.values():
            await client.script_load(source)

    async def run(
        self, client: Client, commands: Sequence[Command], *, raise_errors: bool = True
    ) -> list[Any]:
        """Send `commands` (script calls from `call` or plain ones) in one round trip; the
        first error is raised, or with `raise_errors=False` returned in its command's place."""
        results = await _send(client, commands)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self.load(client)
            again = await _send(client, [commands[i] for i in missing])
            for index, result in zip(missing, again, strict=True):
                results[index] = result
        for result in results:
            if raise_errors and isinstance(result, Exception):
                raise result
        return results


async def _send(client: Client, commands: Sequence[Command]) -> list[Any]:
    """The replies (or errors) of `commands`: one command as is, several in a pipeline."""
    return await _in_time(_replies(client, commands))


async def _in_time(replies: Awaitable[T]) -> T:
    """`replies`, within COMMAND_TIMEOUT. A cancelled read makes redis-py drop its
    connection, so the deadline leaves none dirty."""
    deadline = _DEADLINES.start()
    try:
        return await replies
    except asyncio.CancelledError:
        if not deadline.expired():
            raise
        raise RedisTimeoutError(f"Redis did not answer within {COMMAND_TIMEOUT} s") from None
    except RuntimeError as exc:
        # uvloop's answer to a write on a connection its peer has closed (a cluster node that
        # just died, under a pipeline of redis-py's that had not noticed yet): lost, not a bug.
        if _CLOSED_TRANSPORT not in str(exc):
            raise
        raise RedisConnectionError(f"the connection to Redis was closed ({exc})") from exc
    finally:
        deadline.stop()


async def _replies(client: Client, commands: Sequence[Command]) -> list[Any]:
    if len(commands) == 1:
        try:
            return [await _execute(client, commands[0])]
        except ResponseError as exc:  # as a pipeline returns it (NOSCRIPT among them)
            return [exc]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))


async def _execute(client: Client, command: Command) -> Any:
    """One command's reply. A script call or a GET over a client of `_LANES` goes straight
    over a connection of its lane: redis-py's `execute_command` (a retry wrapper, metrics at
    every step) and its pool (two locks and four metrics a command) cost as much as the
    command itself, and neither command has a reply callback to skip. A connection drops
    itself on an error or a cancelled read and connects again when next used; one that is
    connected and clean is used as it is (the pool's check goes through redis-py's retry
    wrapper every time)."""
    lane = _LANES.get(client)
    if lane is None or command[0] not in _RAW_REPLIES:
        return await client.execute_command(*command)
    return await _read(lane, await _write(lane, command))


def writes_at_once(client: Client) -> bool:
    """Whether `write_at_once` can send a script call over `client`."""
    return client in _LANES


async def write_at_once(client: Client, command: Command) -> Awaitable[Any]:
    """Write a script call (or GET) over a lane connection of `client` (see
    `writes_at_once`) in the caller's task, and return its reply to come, to be awaited,
    once, by another task (within COMMAND_TIMEOUT, raising what `_execute` would). The
    write raises a connection's errors; written, the command is on the socket."""
    lane = _LANES[client]
    return _in_time(_read(lane, await _write(lane, command)))


async def _write(lane: _Lane, command: Command) -> AbstractConnection:
    pool, idle = lane
    connection = idle.pop() if idle else pool.get_available_connection()  # type: ignore[no-untyped-call]
    try:
        if not connection.is_connected or await connection.can_read():
            await pool.ensure_connection(connection)  # (re)connects, or drops what was left
        await connection.send_packed_command(connection.pack_command(*command), False)
    except BaseException:
        idle.append(connection)
        raise
    return connection


async def _read(lane: _Lane, connection: AbstractConnection) -> Any:
    try:
        return await connection.read_response()
    finally:
        lane[1].append(connection)


async def read_pubsub(pubsub: PubSub, timeout: float | None = None) -> Any:
    """The next reply on a subscribed connection: a list `[kind, channel, data]` (kind
    `b"message"`, `b"subscribe"`, ...) or the reply of another command sent on it
    (`commands_when_subscribed`); None if nothing came within `timeout` seconds (None: no
    limit; 0: only one read already, without a turn of the loop or a timer). Not
    redis-py's `get_message`, whose retry wrapper, metrics and message dict cost as much
    as the rest of a wake-up, and whose `timeout=0` takes a turn of the loop and a timer."""
    connection = pubsub.connection
    if connection is None:
        raise RedisConnectionError("the pub/sub connection is closed")
    if timeout == 0:
        if not await connection.can_read():
            return None
        timeout = None  # what is there already is a whole reply, or its rest is on the way
    return await connection.read_response(
        timeout=math.inf if timeout is None else timeout,
        disconnect_on_error=False,
        push_request=True,
    )


async def close_pubsub(pubsub: PubSub) -> None:
    """Give a pub/sub connection back (closed, so its subscriptions end with it)."""
    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis-py 8.2


class RetryBackoff:
    """Delays between attempts while Redis is unreachable: doubling up to a ceiling."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Count a failure; how long to wait before the next attempt."""
        self.failures += 1
        return min(RETRY_FIRST_DELAY * 2.0 ** (self.failures - 1), RETRY_MAX_DELAY)

    async def sleep(self) -> None:
        await anyio.sleep(self.next_delay())


class Outage:
    """Redis unreachable, as seen by the operations on one connection: logged once when the
    first of them fails and once when one succeeds again (how long it lasted, what was retried
    meanwhile), however many operations fail in between."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._retried: Counter[str] = Counter()

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, what: str, error: Exception) -> None:
        """`what` (e.g. "renewing a lease") failed for want of Redis and will be tried again."""
        if self._since is None:
            self._since = time.monotonic()
            logger.warning("Redis unavailable while %s (%s): retrying", what, error)
        self._retried[what] += 1

    def over(self) -> None:
        """An operation reached Redis: the outage, if there was one, has ended."""
        if self._since is None:
            return
        lasted = time.monotonic() - self._since
        retried = ", ".join(f"{what} {count}x" for what, count in self._retried.most_common())
        logger.warning("Redis reachable again after %.1f s; retried meanwhile: %s", lasted, retried)
        self._since = None
        self._retried.clear()


async def retrying(
    operation: Callable[[], Awaitable[T]], timeout: float, what: str, outage: Outage
) -> T:
    """`operation()`, tried again with backoff while Redis is unreachable, for up to `timeout` s."""
    backoff = RetryBackoff()
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await operation()
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise
            outage.failed(what, exc)
            await backoff.sleep()
            continue
        if backoff.failures:
            outage.over()
        return result
