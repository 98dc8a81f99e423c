"""Polling with deadlines: the harness waits on other processes' work, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

INTERVAL = 0.05


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = INTERVAL
) -> bool:
    """Await `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(interval)
    return True


async def until_none_left(
    remaining: Callable[[], Awaitable[int]], *, stall: float, cap: float, interval: float = 0.5
) -> bool:
    """Await `remaining` until it is 0 (True). False once it has not gone down for `stall`
    seconds, or after `cap`: a scenario that is merely slow keeps going as long as it moves."""
    started = progressed = time.monotonic()
    least = await remaining()
    while least > 0:
        now = time.monotonic()
        if now - progressed > stall or now - started > cap:
            return False
        await anyio.sleep(interval)
        left = await remaining()
        if left < least:
            least, progressed = left, time.monotonic()
    return True
