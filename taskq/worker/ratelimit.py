"""Rate limits: `rate_limit="10/s" | "100/m" | "1000/h"` per task.

A limited task waits (still reserved, not holding a slot) until it may start.
`rate_limit_scope="worker"` is a token bucket in this worker; `"global"` holds across
all workers by claiming one start slot per `period / count` seconds in the result
store with `set_if_absent`, so any store that has it (SQLite, Redis) can enforce it.
"""

from __future__ import annotations

import math
import re
import time

import anyio

from taskq.errors import ConfigurationError
from taskq.stores.base import ResultStore

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# A global slot key outlives its slot long enough for every worker's clock to have moved on.
_SLOT_KEY_LIFETIME = 10


def parse_rate(rate: str) -> float:
    """Seconds between starts for a rate such as "10/s"."""
    match = _RATE.match(rate)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigurationError(
            f"bad rate_limit {rate!r}: expected e.g. '10/s', '100/m', '1000/h'"
        )
    return _PERIODS[match.group(2)] / float(match.group(1))


class TokenBucket:
    """One token per `interval`, at most `capacity` saved up."""

    def __init__(self, interval: float, capacity: int = 1) -> None:
        self.interval = interval
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated = anyio.current_time()

    async def acquire(self) -> None:
        while True:
            now = anyio.current_time()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) / self.interval)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await anyio.sleep((1 - self._tokens) * self.interval)


class GlobalSlots:
    """At most one start per `interval` across every worker sharing `store`."""

    def __init__(self, store: ResultStore, name: str, interval: float) -> None:
        self.store = store
        self.name = name
        self.interval = interval

    async def acquire(self) -> None:
        while True:
            now = time.time()
            slot = math.floor(now / self.interval)
            key = f"rate:{self.name}:{slot}"
            lifetime = self.interval * _SLOT_KEY_LIFETIME
            if await self.store.set_if_absent(key, b"", lifetime):
                return
            await anyio.sleep((slot + 1) * self.interval - now)


class RateLimits:
    """The limiters of one worker, made on first use per task name."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self._limiters: dict[str, TokenBucket | GlobalSlots] = {}

    async def wait(self, name: str, rate: str, scope: str) -> None:
        limiter = self._limiters.get(name)
        if limiter is None:
            interval = parse_rate(rate)
            limiter = (
                GlobalSlots(self.store, name, interval)
                if scope == "global"
                else TokenBucket(interval)
            )
            self._limiters[name] = limiter
        await limiter.acquire()
