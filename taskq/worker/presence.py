"""A worker's presence: its heartbeats on the control channel (Celery's `worker-online`,
`worker-heartbeat` every `worker_heartbeat_interval`, `worker-offline` on shutdown), and the
table of every worker it hears, itself included.

A worker that said `worker-offline`, or whose heartbeats stopped for `MISSED_BEATS` of its
intervals (it was killed), is offline; it is forgotten `FORGET_AFTER` seconds later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from taskq.brokers.base import Broker
from taskq.control import CONTROL_CHANNEL

logger = logging.getLogger("taskq.worker")

ONLINE, HEARTBEAT, OFFLINE = "worker-online", "worker-heartbeat", "worker-offline"
EVENTS = frozenset({ONLINE, HEARTBEAT, OFFLINE})
MISSED_BEATS = 3
FORGET_AFTER = 300.0
GOODBYE_TIMEOUT = 5.0  # seconds a stopping worker gives its worker-offline


@dataclass(slots=True)
class _Peer:
    queues: list[str]
    active: int
    interval: float
    last_heartbeat: float  # when it was heard, epoch seconds
    gone: bool  # it said worker-offline

    def online(self, now: float) -> bool:
        return not self.gone and now - self.last_heartbeat <= MISSED_BEATS * self.interval


class Peers:
    """The table of the workers heard: `hear` takes in a presence event, `peers` reads it
    (a worker's, and the exporter's)."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}

    def hear(self, event: dict[str, Any]) -> None:
        """Take in a presence event (one of `EVENTS`) from the control channel."""
        try:
            worker, queues = str(event["worker"]), list(event["queues"])
            active, interval = int(event["active"]), float(event["interval"])
        except (KeyError, TypeError, ValueError):
            logger.warning("Ignored a malformed %s event: %r", event.get("op"), event)
            return
        now = time.time()
        self._peers[worker] = _Peer(queues, active, interval, now, event["op"] == OFFLINE)
        self._peers = {
            name: peer
            for name, peer in self._peers.items()
            if peer.online(now) or now - peer.last_heartbeat < FORGET_AFTER
        }

    def peers(self) -> dict[str, dict[str, Any]]:
        """Every worker heard (and not forgotten), as `taskq.control.WorkerPresence` reads it."""
        now = time.time()
        return {
            name: {
                "queues": peer.queues,
                "active": peer.active,
                "last_heartbeat": peer.last_heartbeat,
                "online": peer.online(now),
            }
            for name, peer in self._peers.items()
        }


class Presence(Peers):
    """Sends this worker's heartbeats (`run`) and keeps what it hears (`hear`, `peers`)."""

    def __init__(
        self,
        broker: Broker,
        hostname: str,
        interval: float,
        queues: Callable[[], list[str]],
        active: Callable[[], int],
    ) -> None:
        super().__init__()
        self._broker = broker
        self._hostname = hostname
        self._interval = interval
        self._queues = queues
        self._active = active

    async def run(self) -> None:
        """Announce this worker, beat until cancelled, then say goodbye."""
        try:
            await self._send(ONLINE)
            while True:
                await anyio.sleep(self._interval)
                await self._send(HEARTBEAT)
        finally:
            with anyio.move_on_after(GOODBYE_TIMEOUT, shield=True):
                await self._send(OFFLINE)

    async def _send(self, op: str) -> None:
        event = {
            "op": op,
            "worker": self._hostname,
            "queues": self._queues(),
            "active": self._active(),
            "interval": self._interval,
        }
        try:
            await self._broker.broadcast(CONTROL_CHANNEL, orjson.dumps(event))
        except Exception as exc:  # the broker is down: the next beat tries again
            logger.warning("Could not send %s: %s", op, exc)
