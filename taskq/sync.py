"""Producing from synchronous code (Django and Flask views, management commands, scripts):
blocking calls that run the app's coroutines on one background event loop per process.

The loop (uvloop's when it is installed) runs in a daemon thread, started on first use. The
app's connections on it are that loop's own (`taskq.connections`), reused by every call from
every thread; at interpreter exit the loop shuts down as `asyncio.run`'s does, which closes
them. A forked child (a pre-forking web server) starts a loop of its own on first use. Called
inside a running event loop, a blocking call would stall it, so it raises instead, naming the
call to await.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from taskq.errors import TaskError
from taskq.result import AsyncResult

T = TypeVar("T")
R = TypeVar("R")

# How long interpreter exit waits for the loop to close its connections.
SHUTDOWN_TIMEOUT = 10.0


class LoopThread:
    """An event loop in a daemon thread: `run(work, ...)` runs `work()` on it and blocks the
    calling thread until it is done; safe from any number of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        atexit.register(self.stop)
        os.register_at_fork(after_in_child=self._forget)

    def run(self, work: Callable[[], Coroutine[Any, Any, T]], call: str, awaited: str) -> T:
        """`work()`'s value, or what it raised. `call` names the blocking call and `awaited`
        what to await instead, for the error inside a running event loop."""
        _refuse_inside_event_loop(call, awaited)
        return _Call(work, self._running_loop()).result()

    def stop(self) -> None:
        """Shut the loop down (closing the connections made on it) and wait for its thread."""
        with self._lock:
            loop, stopping, thread = self._loop, self._stopping, self._thread
            self._loop = self._stopping = self._thread = None
        if loop is None or stopping is None or thread is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(SHUTDOWN_TIMEOUT)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        started = threading.Event()

        async def serve() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            started.set()
            await self._stopping.wait()

        def run_loop() -> None:
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(serve())
            finally:
                started.set()  # also when the loop could not start: the caller must not hang

        self._thread = threading.Thread(target=run_loop, name="taskq-sync-loop", daemon=True)
        self._thread.start()
        started.wait()
        if self._loop is None:
            raise RuntimeError("taskq's background event loop did not start (see the error above)")

    def _forget(self) -> None:
        """In a forked child: the parent's loop thread is not there; start anew on first use."""
        self._lock = threading.Lock()
        self._loop = self._stopping = self._thread = None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed, as for a worker's `--loop auto`: a blocking publish
    on Redis costs about a tenth less CPU on it; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _Call(Generic[T]):
    """One blocking call: a task on the loop, waited for in the calling thread on a bare lock,
    which is cheaper than `run_coroutine_threadsafe`'s future (about 40 µs of CPU less per
    blocking publish on Redis)."""

    __slots__ = ("_done", "_loop", "_task", "_work")

    def __init__(
        self, work: Callable[[], Coroutine[Any, Any, T]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._work, self._loop = work, loop
        self._task: asyncio.Task[T] | None = None
        self._done = threading.Lock()
        self._done.acquire()
        loop.call_soon_threadsafe(self._start)

    def result(self) -> T:
        try:
            self._done.acquire()
        except BaseException:  # the waiting thread was interrupted: stop the work too
            self._loop.call_soon_threadsafe(self._cancel)
            raise
        assert self._task is not None
        return self._task.result()

    def _start(self) -> None:
        self._task = self._loop.create_task(self._work())
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[T]) -> None:
        self._done.release()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


_loop_thread = LoopThread()


def run(work: Callable[[], Coroutine[Any, Any, T]], call: str, awaited: str) -> T:
    """Run `work()` on the process's background event loop and block until it is done."""
    return _loop_thread.run(work, call, awaited)


def shutdown() -> None:
    """Shut the background loop down now, closing the connections made on it (interpreter exit
    does this by itself); the next blocking call starts a new one."""
    _loop_thread.stop()


def _refuse_inside_event_loop(call: str, awaited: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{call} blocks, so it cannot be called inside a running event loop:"
        f" use `await {awaited}` there instead"
    )


class SyncResult(Generic[R]):
    """The blocking twin of `AsyncResult`, returned by `delay_sync()`, `apply_async_sync()`
    and `send_task_sync()`, or `app.SyncResult(task_id)`: every query blocks for its answer."""

    def __init__(self, result: AsyncResult[R]) -> None:
        self.async_result = result

    @property
    def id(self) -> str:
        return self.async_result.id

    def __repr__(self) -> str:
        return f"<SyncResult {self.id}>"

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        """Wait for the task to finish and return its value; a failure raises a `TaskError`
        subclass (or is returned, when `propagate` is false), `taskq.errors.TimeoutError`
        comes after `timeout` seconds."""
        return self._run(partial(self.async_result.get, timeout, propagate), "get")

    def status(self) -> str:
        """PENDING (unknown), RECEIVED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return self._run(self.async_result.status, "status")

    state = status

    def ready(self) -> bool:
        return self._run(self.async_result.ready, "ready")

    def successful(self) -> bool:
        return self._run(self.async_result.successful, "successful")

    def failed(self) -> bool:
        return self._run(self.async_result.failed, "failed")

    def result(self) -> R | TaskError | None:
        """The value, the error of a failed task, or None while it is not ready."""
        return self._run(self.async_result.result, "result")

    info = result

    def wait(self, timeout: float | None = None, propagate: bool = True) -> R:
        """Celery's other name for `get()`."""
        return self._run(partial(self.async_result.get, timeout, propagate), "wait")

    def traceback(self) -> str | None:
        return self._run(self.async_result.traceback, "traceback")

    def name(self) -> str | None:
        return self._run(self.async_result.name, "name")

    def args(self) -> list[Any] | None:
        return self._run(self.async_result.args, "args")

    def kwargs(self) -> dict[str, Any] | None:
        return self._run(self.async_result.kwargs, "kwargs")

    def queue(self) -> str | None:
        return self._run(self.async_result.queue, "queue")

    def worker(self) -> str | None:
        return self._run(self.async_result.worker, "worker")

    def retries(self) -> int:
        return self._run(self.async_result.retries, "retries")

    def date_done(self) -> datetime | None:
        return self._run(self.async_result.date_done, "date_done")

    def revoke(self, terminate: bool = False) -> None:
        self._run(partial(self.async_result.revoke, terminate), "revoke")

    def forget(self) -> None:
        self._run(self.async_result.forget, "forget")

    def _run(self, work: Callable[[], Coroutine[Any, Any, T]], method: str) -> T:
        return run(work, f"SyncResult.{method}()", f"AsyncResult.{method}()")
