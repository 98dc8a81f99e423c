"""Deadlines on many short operations, by one timer per event loop.

`asyncio.timeout` arms a timer for every operation (and leaves it cancelled in the loop's
heap): a fifth of the CPU of a lone Redis command. Here an operation registers itself and
one timer, armed only while some operation runs, looks every `resolution` seconds: an
operation is cancelled between `timeout` and `timeout + resolution` seconds after it began,
and `Watch.expired()` tells its task that the cancellation was the deadline's.

Imports nothing of taskq.
"""

from __future__ import annotations

import asyncio
import weakref


class Watch:
    """One operation's deadline: `stop()` it when the operation ends, however it ends."""

    __slots__ = ("_cancelling", "_fired", "_task", "_watched", "due")

    def __init__(self, watched: _Watched, task: asyncio.Task[object], due: float) -> None:
        self._watched = watched
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = False
        self.due = due

    def stop(self) -> None:
        self._watched.running.pop(self, None)

    def expired(self) -> bool:
        """In the handler of a `CancelledError`: whether it is this deadline's, which is
        then undone (as `asyncio.timeout` turns its own into `TimeoutError`)."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()


class _Watched:
    """The operations running in one event loop, and the timer that looks at them (it holds
    no reference to the loop, which keys it weakly)."""

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self.running: dict[Watch, None] = {}
        self._armed = False  # not the timer's handle: that refers to the loop

    def add(self, watch: Watch, loop: asyncio.AbstractEventLoop) -> None:
        self.running[watch] = None
        if not self._armed:
            self._armed = True
            loop.call_later(self.resolution, self._look)

    def _look(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for watch in [watch for watch in self.running if watch.due <= now]:
            del self.running[watch]
            watch.fire()
        self._armed = bool(self.running)
        if self._armed:
            loop.call_later(self.resolution, self._look)


class Deadlines:
    """`start()` in a task: that task is cancelled once `timeout` seconds have passed (give
    or take `resolution`) unless the watch is stopped first."""

    def __init__(self, timeout: float, resolution: float) -> None:
        self.timeout = timeout
        self._resolution = resolution
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watched] = (
            weakref.WeakKeyDictionary()
        )

    def start(self) -> Watch:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a task to cancel")
        watched = self._loops.get(loop)
        if watched is None:
            watched = self._loops[loop] = _Watched(self._resolution)
        watch = Watch(watched, task, loop.time() + self.timeout)
        watched.add(watch, loop)
        return watch
