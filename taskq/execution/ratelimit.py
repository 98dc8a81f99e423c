"""Rate limits: `rate_limit="10/s" | "100/m" | "1000/h"` per task (else the app's
`task_default_rate_limit`).

A limited task waits, still reserved but with its concurrency slot lent to other work, until
it may start. `rate_limit_scope="worker"` is a token bucket in this worker; `"global"` holds
across all workers by claiming one start slot per `period / count` seconds in the result
store with `set_if_absent`, so any store that has it (SQLite, Redis) can enforce it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

from taskq import states
from taskq.execution.job import GIVEN_BACK, CallNext, Job, Outcome, Runtime
from taskq.execution.meta import state
from taskq.options import parse_rate
from taskq.stores.base import ResultStore

# A global slot key outlives its slot long enough for every worker's clock to have moved on.
_SLOT_KEY_LIFETIME = 10


class TokenBucket:
    """One token per `interval`, at most `capacity` saved up."""

    def __init__(self, interval: float, capacity: int = 1) -> None:
        self.interval = interval
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated = anyio.current_time()

    async def try_acquire(self) -> bool:
        now = anyio.current_time()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) / self.interval)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        while not await self.try_acquire():  # noqa: ASYNC110 - a token comes with time only
            await anyio.sleep((1 - self._tokens) * self.interval)


class GlobalSlots:
    """At most one start per `interval` across every worker sharing `store`."""

    def __init__(self, store: ResultStore, name: str, interval: float) -> None:
        self.store = store
        self.name = name
        self.interval = interval

    async def try_acquire(self) -> bool:
        slot = math.floor(time.time() / self.interval)
        key = f"rate:{self.name}:{slot}"
        return await self.store.set_if_absent(key, b"", self.interval * _SLOT_KEY_LIFETIME)

    async def acquire(self) -> None:
        while not await self.try_acquire():
            now = time.time()
            await anyio.sleep((math.floor(now / self.interval) + 1) * self.interval - now)


class RateLimit:
    """The stage of rate-limited tasks: RECEIVED while it waits for its start."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._limiters: dict[tuple[str, str], TokenBucket | GlobalSlots] = {}

    def applies_to(self, task: Any) -> bool:
        return rate_of(task) is not None

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        limiter = self._limiter(job)
        if not await limiter.try_acquire():
            if job.stores_result:
                received = state(job, self._runtime.hostname, states.RECEIVED)
                await self._runtime.states.write(received)
            if not await self._runtime.wait_off_slot(limiter.acquire):
                await job.delivery.nack(requeue=True)
                return Outcome(GIVEN_BACK)
        return await call_next(job)

    def _limiter(self, job: Job) -> TokenBucket | GlobalSlots:
        """The task's limiter at its rate now (a control command may change it)."""
        task, rate = job.task, rate_of(job.task)
        assert rate is not None  # the stage applies to rate-limited tasks only
        limiter = self._limiters.get((task.name, rate))
        if limiter is None:
            interval = parse_rate(rate)
            limiter = self._limiters[task.name, rate] = (
                GlobalSlots(self._runtime.store, task.name, interval)
                if task.rate_limit_scope == "global"
                else TokenBucket(interval)
            )
        return limiter


def rate_of(task: Any) -> str | None:
    rate: str | None = task.rate_limit or task.app.conf.task_default_rate_limit
    return rate
