"""Watching the worker's event loop: a task that blocks it is named, and /healthz sees it.

While a job runs, a heartbeat on the loop (a timer callback) notes the time every `tick`,
and a watcher thread looks as often. While the heartbeat is late (the loop is blocked: a
`time.sleep`, a blocking client, heavy CPU in an async task), the watcher reads the loop
thread's stack for the job being called and keeps it. When the loop comes back, the
heartbeat measures how long it was away and, past the threshold, logs it once per job,
naming the task the watcher found (a block in no task's call, the process paused or
collecting garbage, is only a debug line).

Only a task can be named, so an idle worker does not watch: the heartbeat stops at the first
beat that finds no job running and the watcher thread waits on an event, costing nothing;
the next job starts them again (`handle`, an outermost pipeline stage that costs no
coroutine). /healthz asks the loop itself when it is probed (`answers_within`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import anyio

from taskq.execution.call import Call
from taskq.execution.job import CallNext, Job, Outcome

logger = logging.getLogger("taskq.worker")

MAX_TICK = 0.25  # seconds between heartbeats at most
WARNED_KEPT = 1000  # ids of the jobs already warned about, the latest


class LoopWatch:
    """`await watch.run()` on the loop to watch; `busy()` says whether a job is running.
    As a pipeline stage it wakes the heartbeat for each job; `answers_within` and
    `blocked_for` may be called from any thread."""

    def __init__(self, warn_after: float | None, busy: Callable[[], bool]) -> None:
        self.warn_after = warn_after
        self.tick = min(warn_after / 2, MAX_TICK) if warn_after else MAX_TICK
        self._busy = busy
        self._loop: asyncio.AbstractEventLoop | None = None  # None until `run`
        self._loop_thread = threading.get_ident()
        self._beat: float | None = None  # None while not beating
        self._timer: asyncio.TimerHandle | None = None
        self._culprit: tuple[float, Job] | None = None  # (the beat it blocked after, its job)
        self._warned: collections.deque[str] = collections.deque(maxlen=WARNED_KEPT)
        self._beating = threading.Event()  # the watcher thread looks while it is set
        self._stopped = threading.Event()

    # -- the pipeline stage (outermost, in a worker with worker_blocking_warning) --------

    def applies_to(self, task: Any) -> bool:
        return self.warn_after is not None

    def handle(self, job: Job, call_next: CallNext) -> Coroutine[Any, Any, Outcome]:
        if self._timer is None and self._loop is not None:
            self._start_beating(self._loop)
        return call_next(job)

    # -- from any thread ----------------------------------------------------------------

    def answers_within(self, seconds: float) -> bool:
        """Whether the loop runs a callback within `seconds` (True before `run`)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return True
        answered = threading.Event()
        loop.call_soon_threadsafe(answered.set)
        return answered.wait(seconds)

    def blocked_for(self) -> float:
        """Seconds the heartbeat is overdue now (0 when on time, or not beating)."""
        beat = self._beat
        return 0.0 if beat is None else max(0.0, time.monotonic() - beat - self.tick)

    # -- on the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled (the watcher thread only with a `warn_after`)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.warn_after is not None:
            watcher = threading.Thread(target=self._watch, name="taskq-loopwatch", daemon=True)
            watcher.start()
        try:
            await anyio.sleep_forever()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._beat = None
            self._stopped.set()
            self._beating.set()  # so that the watcher sees it stopped

    def _start_beating(self, loop: asyncio.AbstractEventLoop) -> None:
        self._beat = time.monotonic()
        self._timer = loop.call_later(self.tick, self._heartbeat, loop)
        self._beating.set()

    def _heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        now, beat = time.monotonic(), self._beat
        assert beat is not None and self.warn_after is not None
        late = now - beat - self.tick
        if late > self.warn_after:
            self._warn(beat, late)
        self._culprit = None
        if self._busy():
            self._beat = now
            self._timer = loop.call_later(self.tick, self._heartbeat, loop)
        else:  # idle: nothing to watch until the next job
            self._beating.clear()
            self._beat = self._timer = None

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

    # -- the watcher thread -------------------------------------------------------------

    def _watch(self) -> None:
        """While the heartbeat beats and is late, find the job on the loop's stack."""
        while self._beating.wait() and not self._stopped.wait(self.tick):
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
