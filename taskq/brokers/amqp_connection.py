"""Opening the RabbitMQ connection: aio-pika's robust connection, which reconnects by itself
once it has been open (to the next node of a cluster given as several URLs), and a first
connection that fails explained in one line.

A refused login (ACCESS_REFUSED) and a vhost RabbitMQ will not open (NOT_ALLOWED on
connection.open: it does not exist, or the user has no permissions on it) are
`LoginRefusedError`s, which retrying cannot mend. Anything else that keeps the connection
from opening (a closed port, an unknown host, no answer in time) is `BrokerUnavailable`.
What aiormq and aio-pika log about such a failure ("error when creating transport", and
"Reconnecting after 1 seconds" although they will not) is the error raised here, so it is
not logged twice, the second time wrongly.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import InvalidFrameError, ProbableAuthenticationError
from yarl import URL

from taskq.brokers.amqp_consumer import winding_down
from taskq.brokers.amqp_writes import coalesce_writes
from taskq.errors import BrokerUnavailable, LoginRefusedError
from taskq.tls import tls_error
from taskq.urls import alternatives, masked_url

logger = logging.getLogger("taskq.brokers.amqp")

# The loggers of the libraries' own account of a failing first connection.
_FIRST_CONNECTION_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection")
# How aiormq reports a connection.close in answer to connection.open: the vhost was refused.
_OPEN_REFUSED = "Connection.OpenOk"


async def open_robust_connection(
    url: str,
    *,
    reconnect_interval: float,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AbstractRobustConnection:
    """The robust connection to `url` (over TLS with `ssl_context`), or one line saying why it
    did not open. A connect that fails or is cancelled (a caller's deadline) is closed: left
    alone, aio-pika would go on connecting in the background."""
    urls = [URL(node) for node in alternatives(url)]
    connection = FailoverConnection(
        urls,
        unreachable_after=timeout,
        reconnect_interval=reconnect_interval,
        ssl_context=ssl_context,
    )
    with _unlogged(_FIRST_CONNECTION_LOGGERS):
        try:
            await connection.connect(timeout=timeout)
        except BaseException as exc:
            with winding_down(timeout):
                await connection.close()
            tls = tls_error(f"RabbitMQ at {masked_url(url)}", exc)
            if tls is not None:
                raise tls from None
            if isinstance(exc, CONNECTION_EXCEPTIONS):
                raise _explained(url, exc, timeout) from None
            raise
    return connection


class FailoverConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection to one of several nodes of a cluster (`urls`): each
    attempt to connect, the first one and every reconnection, tries them in turn, from the one
    that answered last, until one does; aio-pika then restores the channels, what they
    declared and their consumers, on that node. A refused login is not tried elsewhere. Each
    link writes all its queued frames at once (amqp_writes.py).

    Once no node has answered for `unreachable_after` seconds (`publish_timeout`, after which
    publishing fails and /readyz says the broker does not answer) the outage is logged, and so
    is its end."""

    def __init__(self, urls: Sequence[URL], *, unreachable_after: float, **kwargs: Any) -> None:
        super().__init__(urls[0], **kwargs)
        self._urls = list(urls)
        self._current = 0
        self._unreachable_after = unreachable_after
        self._down_since: float | None = None
        self._logged_down = False

    # aio-pika calls this (its private `__connect_transport`) for each attempt to connect.
    async def _RobustConnection__connect_transport(self) -> None:
        connect = super()._RobustConnection__connect_transport  # type: ignore[misc]
        error: BaseException | None = None
        for offset in range(len(self._urls)):
            index = (self._current + offset) % len(self._urls)
            self.url = self._urls[index]
            try:
                await connect()
            except ProbableAuthenticationError:
                raise
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
                continue
            if self.transport is not None:
                coalesce_writes(self.transport.connection)
            self._connected_to(index)
            return
        assert error is not None
        self._unreachable(error)
        raise error

    def _connected_to(self, index: int) -> None:
        if index != self._current or self._down_since is not None:
            logger.warning(
                "Connected to RabbitMQ at %s%s",
                masked_url(str(self._urls[index])),
                ""
                if self._down_since is None
                else f" after {time.monotonic() - self._down_since:.1f} s without a node",
            )
        self._current = index
        self._down_since, self._logged_down = None, False

    def _unreachable(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        if not self._logged_down and now - self._down_since >= self._unreachable_after:
            self._logged_down = True
            logger.error(
                "No RabbitMQ node answered for %.0f s (%s): %s; still trying",
                now - self._down_since,
                ", ".join(masked_url(str(url)) for url in self._urls),
                error,
            )


def _explained(url: str, exc: BaseException, timeout: float) -> Exception:
    parts = urlsplit(url)
    user = unquote(parts.username or "guest")  # aiormq's default
    if isinstance(exc, ProbableAuthenticationError):
        return LoginRefusedError(f"RabbitMQ refused the login for user {user!r}")
    if isinstance(exc, InvalidFrameError) and _OPEN_REFUSED in str(exc):
        vhost = unquote(parts.path[1:]) if parts.path not in ("", "/") else "/"
        return LoginRefusedError(
            f"RabbitMQ would not open vhost {vhost!r} for user {user!r}: "
            "it does not exist, or the user has no permissions on it"
        )
    reason = exc.__cause__ or exc
    if isinstance(reason, ConnectionRefusedError):
        why = "connection refused (nothing listens on that port)"
    elif isinstance(reason, TimeoutError):
        why = f"no answer within {timeout:g} s"
    else:
        why = str(reason) or type(reason).__name__
    return BrokerUnavailable(f"RabbitMQ at {masked_url(url)} is unreachable: {why}")


@contextlib.contextmanager
def _unlogged(names: tuple[str, ...]) -> Iterator[None]:
    """Drop what these loggers log meanwhile."""
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(_drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    return False
