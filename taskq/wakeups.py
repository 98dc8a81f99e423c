"""In-process wake-ups: a coroutine that polls for news about a key (a queue, a task id)
sleeps with backoff, and is woken at once when this process publishes that news.

Imports nothing of taskq.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

FIRST_POLL_DELAY = 0.005


@dataclass(slots=True)
class _Signal:
    generation: int = 0
    events: set[anyio.Event] = field(default_factory=set)
    watchers: int = 0


# An Event belongs to the event loop it was made in, so the registry is per loop: a
# publisher wakes the waiters of its own loop, waiters elsewhere find out when they poll.
_signals: anyio.lowlevel.RunVar[dict[str, _Signal]] = anyio.lowlevel.RunVar("taskq_wakeups")


def _registry() -> dict[str, _Signal]:
    try:
        return _signals.get()
    except LookupError:
        signals: dict[str, _Signal] = {}
        _signals.set(signals)
        return signals


def _signal(key: str) -> _Signal:
    signals = _registry()
    signal = signals.get(key)
    if signal is None:
        signal = signals[key] = _Signal()
    return signal


def wake(key: str) -> None:
    """Wake whoever in this event loop waits for news about `key` (nobody: nothing to do)."""
    signal = _registry().get(key)
    if signal is not None:
        signal.generation += 1
        for event in signal.events:
            event.set()


@contextmanager
def watching(key: str) -> Iterator[None]:
    """Keep `key`'s wake-ups for the block; a short-lived key (a task id) is dropped after."""
    signal = _signal(key)
    signal.watchers += 1
    try:
        yield
    finally:
        signal.watchers -= 1
        if not signal.watchers:
            _registry().pop(key, None)


def wake_generation(key: str) -> int:
    """Read before polling; `Backoff.sleep` returns at once if a wake came since."""
    return _signal(key).generation


class Backoff:
    """Sleeps between empty polls: from a few ms, doubling up to `ceiling`, cut short by `wake`."""

    def __init__(self, ceiling: float) -> None:
        self._ceiling = max(ceiling, FIRST_POLL_DELAY)
        self._delay = FIRST_POLL_DELAY

    def reset(self) -> None:
        self._delay = FIRST_POLL_DELAY

    async def sleep(self, key: str, seen: int, due_in: float | None = None) -> None:
        """Sleep the next delay (never past `due_in`) unless `key` is woken or was since `seen`."""
        timeout = self._delay if due_in is None else max(0.0, min(self._delay, due_in))
        self._delay = min(self._delay * 2, self._ceiling)
        signal = _signal(key)
        if signal.generation != seen:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        signal.events.add(event)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            signal.events.discard(event)
