"""The task bodies every library runs, registered by each adapter under these names.

Each ends by counting itself (`benchmarks.probe`). Coroutines where the library has async
tasks (`asyncio.sleep` is what `anyio.sleep` is on asyncio, and not every peer has anyio);
the `blocking_*` twins for Celery, which has none. Standard library only.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from collections.abc import Callable
from typing import Any

from benchmarks import probe

SLEEP_SECONDS = 0.01  # what a sleeping task awaits
# SHA-256 rounds of a hashing task: about 20 ms of one core. Each hashes 512 bytes, under
# hashlib's 2,048 at which it lets go of the GIL: threads cannot run two at once.
HASH_ROUNDS = 17_000


class Kind(enum.Enum):
    """What a workload's tasks do; the value is the registered task name."""

    NOOP = "noop"  # nothing (but counting itself)
    SLEEP = "sleep"  # await SLEEP_SECONDS: I/O-bound concurrency
    SYNC = "sync"  # a plain function doing a little arithmetic, run in a thread
    HASH = "hash"  # a plain function hashing for about 20 ms: CPU-bound, holding the GIL


def light_work() -> int:
    """The CPU-light body of a sync task: a few microseconds of arithmetic."""
    return sum(i * i for i in range(100))


async def noop() -> None:
    await probe.incr()


async def sleep() -> None:
    await asyncio.sleep(SLEEP_SECONDS)
    await probe.incr()


def sync() -> int:
    """A plain function: each library runs it in a thread."""
    value = light_work()
    probe.incr_sync()
    return value


async def step(value: int = 0) -> int:
    """A chain link: gets the previous link's result."""
    await probe.incr()
    return value + 1


async def tally(values: list[Any] | None = None) -> int:
    """A chord's callback: gets the members' results where the library passes them."""
    await probe.incr()
    return len(values or ())


def hashing() -> str:
    """CPU-bound: HASH_ROUNDS of SHA-256 in pure Python calls, about 20 ms."""
    digest = b"benchmark-digest-seed-32-bytes!!"
    for _ in range(HASH_ROUNDS):
        digest = hashlib.sha256(digest * 16).digest()
    probe.incr_sync()
    return digest.hex()


def blocking_noop() -> None:
    probe.incr_sync()


def blocking_sleep() -> None:
    time.sleep(SLEEP_SECONDS)
    probe.incr_sync()


def blocking_step(value: int = 0) -> int:
    probe.incr_sync()
    return value + 1


def blocking_tally(values: list[Any] | None = None) -> int:
    probe.incr_sync()
    return len(values or ())


BODIES: dict[Kind, Callable[..., Any]] = {
    Kind.NOOP: noop,
    Kind.SLEEP: sleep,
    Kind.SYNC: sync,
    Kind.HASH: hashing,
}
BLOCKING: dict[Kind, Callable[..., Any]] = {
    Kind.NOOP: blocking_noop,
    Kind.SLEEP: blocking_sleep,
    Kind.SYNC: sync,
    Kind.HASH: hashing,
}


def with_context(body: Callable[..., Any]) -> Callable[..., Any]:
    """`body` as a job whose first argument is the library's context (arq, SAQ)."""
    if asyncio.iscoroutinefunction(body):

        async def job(ctx: dict[str, Any], *args: Any) -> Any:
            return await body(*args)

    else:

        def job(ctx: dict[str, Any], *args: Any) -> Any:
            return body(*args)

    job.__qualname__ = job.__name__ = body.__name__
    return job
