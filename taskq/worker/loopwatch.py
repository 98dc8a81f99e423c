"""Watching the worker's event loop: a task that blocks it is named, and /healthz sees it.

A heartbeat on the loop (a timer callback) notes the time every `tick`; a watcher thread looks
as often. While the heartbeat is late (the loop is blocked: a `time.sleep`, a blocking client,
heavy CPU in an async task), the watcher reads the loop thread's stack for the job being
called and keeps it. When the loop comes back, the heartbeat measures how long it was away
and, past the threshold, logs it once per job, naming the task the watcher found (a block in
no task's call, the process paused or collecting garbage, is only a debug line). The watch
costs per second (about 3 ms of CPU a second at the default 0.1 s), not per task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
import time
from types import FrameType

import anyio

from taskq.execution.call import Call
from taskq.execution.job import Job

logger = logging.getLogger("taskq.worker")

MAX_TICK = 0.25  # seconds between heartbeats at most: /healthz's resolution
WARNED_KEPT = 1000  # ids of the jobs already warned about, the latest


class LoopWatch:
    """`await watch.run()` on the loop to watch; `blocked_for()` from any thread."""

    def __init__(self, warn_after: float | None) -> None:
        self.warn_after = warn_after
        self.tick = min(warn_after / 2, MAX_TICK) if warn_after else MAX_TICK
        self._beat: float | None = None  # None until `run` starts beating
        self._loop_thread = threading.get_ident()
        self._culprit: tuple[float, Job] | None = None  # (the beat it blocked after, its job)
        self._warned: collections.deque[str] = collections.deque(maxlen=WARNED_KEPT)
        self._stopped = threading.Event()
        self._timer: asyncio.TimerHandle | None = None

    def blocked_for(self) -> float:
        """Seconds the loop is overdue now (0 when its heartbeat is on time, or not started)."""
        beat = self._beat
        return 0.0 if beat is None else max(0.0, time.monotonic() - beat - self.tick)

    async def run(self) -> None:
        """Beat until cancelled: a timer callback, not a task (a wake-up costs little)."""
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._timer = loop.call_later(self.tick, self._heartbeat, loop)
        watcher = threading.Thread(target=self._watch, name="taskq-loopwatch", daemon=True)
        watcher.start()
        try:
            await anyio.sleep_forever()
        finally:
            self._timer.cancel()
            self._stopped.set()

    def _heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        now, beat = time.monotonic(), self._beat
        assert beat is not None
        late = now - beat - self.tick
        if self.warn_after is not None and late > self.warn_after:
            self._warn(beat, late)
        self._beat = now
        self._culprit = None
        self._timer = loop.call_later(self.tick, self._heartbeat, loop)

    def _warn(self, beat: float, seconds: float) -> None:
        culprit = self._culprit
        if culprit is None or culprit[0] != beat:  # no task ran: a pause of the process, GC
            logger.debug("The event loop was blocked for %.1f s, not by a task", seconds)
            return
        message = culprit[1].message
        if message.id in self._warned:
            return
        self._warned.append(message.id)
        logger.warning(
            "Task %s[%s] blocked the event loop for %.1f s: a blocking call in an async task?",
            message.task,
            message.id,
            seconds,
        )

    def _watch(self) -> None:
        """The watcher thread: while the heartbeat is late, find the job on the loop's stack."""
        while not self._stopped.wait(self.tick):
            beat = self._beat
            if beat is None or self._culprit is not None:
                continue
            if time.monotonic() - beat > 1.5 * self.tick:
                job = _running_job(sys._current_frames().get(self._loop_thread))
                if job is not None:
                    self._culprit = (beat, job)


def _running_job(frame: FrameType | None) -> Job | None:
    """The job whose function a thread's stack is in (`Call.__call__`'s), if any."""
    while frame is not None:
        if frame.f_code is Call.__call__.__code__:
            job = frame.f_locals.get("job")
            return job if isinstance(job, Job) else None
        frame = frame.f_back
    return None
