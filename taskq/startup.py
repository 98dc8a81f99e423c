"""The first connection of `taskq worker` and `taskq beat`, retried while the broker is down.

A worker started before its broker (a machine booting, a deployment that starts everything at
once) waits for it: with `broker_connection_retry_on_startup` (the default) a connection that
fails because the broker or the result store's server cannot be reached (`BrokerUnavailable`)
is tried again after 0.5 s, 1 s, 2 s, ... up to 16 s between attempts, at most
`broker_connection_max_retries` times (None: for ever), with one log line per failed attempt.
Then, or at once without retries, the error ends the command: one line, a non-zero exit,
rather than a crash loop under systemd or Kubernetes. A refused login or vhost
(`LoginRefusedError`) and a bad setting are never retried: they will not mend themselves.

Imports nothing of taskq but `errors` (and `app` for type checking).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio

from taskq.errors import BrokerUnavailable

if TYPE_CHECKING:
    from taskq.app import TaskQ

FIRST_DELAY = 0.5
MAX_DELAY = 16.0

logger = logging.getLogger("taskq.startup")


async def connect_at_startup(app: TaskQ) -> None:
    """`app.connect()`, tried again as the app's settings say while the broker is unreachable."""
    conf = app.conf
    limit = conf.broker_connection_max_retries if conf.broker_connection_retry_on_startup else 0
    delays = _delays()
    retries = 0
    while True:
        try:
            await app.connect()
            return
        except BrokerUnavailable as exc:
            reason = str(exc).rstrip(".")
            if limit is not None and retries >= limit:
                if retries:
                    raise BrokerUnavailable(f"{reason} (gave up after {retries} retries)") from None
                raise
            retries += 1
            delay = next(delays)
            of = f"{retries}/{limit}" if limit is not None else f"{retries}, for ever"
            logger.warning("%s (retry %s in %g s)", reason, of, delay)
            await anyio.sleep(delay)


def _delays() -> Iterator[float]:
    delay = FIRST_DELAY
    while True:
        yield delay
        delay = min(delay * 2, MAX_DELAY)
