"""Opening the RabbitMQ connection: aio-pika's robust connection, which reconnects by itself
once it has been open, and a first connection that fails explained in one line.

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
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import InvalidFrameError, ProbableAuthenticationError
from yarl import URL

from taskq.brokers.amqp_consumer import winding_down
from taskq.errors import BrokerUnavailable, LoginRefusedError
from taskq.tls import tls_error
from taskq.urls import masked_url

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
    connection = aio_pika.RobustConnection(
        URL(url), reconnect_interval=reconnect_interval, ssl_context=ssl_context
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
