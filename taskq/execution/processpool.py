"""The process pool: plain functions of `pool="process"` tasks (or of every plain task, with
`--pool process`) run in processes of their own, so CPU-bound code uses every core and a hard
time limit truly stops it.

A pool process is started with multiprocessing's `spawn` (a fresh interpreter: no event loop,
threads or sockets inherited) and imports the app by its import path (`module:attribute`, the
worker's `-A`). It is handed the delivery's body — the message as it came (arguments in the
task's serialized form; a signed one's signature was checked by the worker) — and answers with the
value in the message's serializer, or the exception (pickled; one that does not pickle comes
back as a `TaskError` of its type and message), the ids of the tasks the function published,
and its resident memory. The traceback text the process recorded is the exception's cause,
so the stored traceback shows it.

A soft time limit reaches the process as SIGUSR1, which raises `SoftTimeLimitExceeded` in the
function; the run being cancelled (the hard limit, a terminating revoke, a cold shutdown)
kills the process with SIGKILL. A process that dies with its task (killed, out of memory)
fails it with `WorkerLostError`; one found dead when a job is handed to it passes the job on.
Whatever the way a process ends — killed, dead, recycled after `max_tasks` tasks or once its
memory grew past `max_memory_kb` — another is started in its place, and the next job waits for
a process that is ready.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import resource
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskq.defaults import PROCESS_POOL, THREAD_POOL
from taskq.errors import SoftTimeLimitExceeded, WorkerLostError, task_error_type
from taskq.message import decode
from taskq.serializers import get_serializer
from taskq.stores.base import exception_type

if TYPE_CHECKING:
    from taskq.execution.job import Job
    from taskq.task import Task

logger = logging.getLogger("taskq.worker")

STOP_TIMEOUT = 5.0  # seconds a pool process is given to exit before it is killed


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How a pool's processes are set up: what they import and how they log."""

    app_spec: str  # module:attribute
    hostname: str
    log_level: int
    log_format: str
    logfile: str | None = None  # the worker's --logfile: reopened on SIGHUP, as the worker's


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a pool process, as its cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n{self.text}"


class _Process:
    """One pool process and the parent's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, pipe: Any) -> None:
        self.process = process
        self.pipe: multiprocessing.connection.Connection = pipe
        self.tasks = 0

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def receive(self) -> Any:
        """The process's next reply; a soft limit (thrown in here) is passed on as SIGUSR1."""
        while True:
            try:
                await anyio.wait_readable(self.pipe.fileno())
            except SoftTimeLimitExceeded:
                os.kill(self.pid, signal.SIGUSR1)
                continue
            return self.pipe.recv()


class ProcessPool:
    def __init__(
        self,
        settings: PoolSettings,
        size: int,
        default: str = THREAD_POOL,
        *,
        max_tasks: int | None = None,
        max_memory_kb: int | None = None,
    ) -> None:
        self.settings = settings
        self.size = size
        self.default = default
        self.max_tasks = max_tasks
        self.max_memory_kb = max_memory_kb
        self._processes: set[_Process] = set()
        self._starting = 0
        send, receive = anyio.create_memory_object_stream[_Process](max_buffer_size=1 << 30)
        self._idle_in: MemoryObjectSendStream[_Process] = send
        self._idle_out: MemoryObjectReceiveStream[_Process] = receive
        self._group: anyio.abc.TaskGroup | None = None
        self._context = multiprocessing.get_context("spawn")

    def takes(self, task: Task[Any, Any]) -> bool:
        """Whether the task's function runs here (its `pool` option, else the default)."""
        return not task.is_coroutine and (task.pool or self.default) == PROCESS_POOL

    @property
    def pids(self) -> list[int]:
        return sorted(process.pid for process in self._processes)

    async def run_service(self) -> None:
        """Keep `size` processes while it runs; stop them when it is cancelled."""
        try:
            async with anyio.create_task_group() as self._group:
                self._fill()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_all()

    def signal(self, signum: int) -> None:
        """Send `signum` to every pool process (SIGHUP: reopen the log file)."""
        for process in list(self._processes):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    def resize(self, size: int) -> None:
        """`size` processes from now on: more are started; extra ones end now if idle, else
        when their task is done."""
        self.size = size
        self._fill()
        while len(self._processes) > size:
            try:
                idle = self._idle_out.receive_nowait()
            except anyio.WouldBlock:
                return
            self._retire(idle, "as the pool shrank")

    async def run(self, job: Job) -> Any:
        """Run the job's function in a pool process; its value, or raise its exception."""
        process = await self._handed(job)
        try:
            reply = await process.receive()
        except (EOFError, OSError):
            await anyio.to_thread.run_sync(process.process.join, STOP_TIMEOUT)  # its status
            self._lost(process)
            raise WorkerLostError(
                f"pool process {process.pid} ended while running the task"
                f" ({_how_it_ended(process.process.exitcode)})"
            ) from None
        except BaseException:  # cancelled: the hard limit, a terminating revoke, a shutdown
            self._kill(process, f"its task {job.message.task}[{job.message.id}] was cancelled")
            raise
        outcome, payload, children, exhausted, rss_kb = reply
        job.request.children.extend(children)
        job.request.retries_exhausted = exhausted
        self._done(process, rss_kb)
        if outcome == "ok":
            return get_serializer(job.message.content_type).loads(payload)
        raise _exception(*payload)

    async def _handed(self, job: Job) -> _Process:
        """An idle process that took the job (one that died idle is replaced, and the job
        goes to another: it never started)."""
        delivery = job.delivery  # a signature in the body is a field decode passes over
        while True:
            process = await self._idle_out.receive()
            try:
                process.pipe.send((delivery.body, delivery.queue, delivery.delivery_count))
            except OSError:
                logger.warning(
                    "Pool process %d had ended while idle; starting another", process.pid
                )
                self._lost(process)
                continue
            return process

    # -- the processes --------------------------------------------------------------

    def _fill(self) -> None:
        assert self._group is not None
        while len(self._processes) + self._starting < self.size:
            self._starting += 1
            self._group.start_soon(self._start_one)

    async def _start_one(self) -> None:
        try:
            parent, child = self._context.Pipe()
            process = self._context.Process(
                target=serve, args=(child, self.settings), name="taskq-pool", daemon=True
            )
            await anyio.to_thread.run_sync(process.start)
            child.close()
            pooled = _Process(process, parent)
            ready = await pooled.receive()
        except (EOFError, OSError) as exc:
            logger.error("A pool process could not start (%s); trying again in 1 s", exc)
            await anyio.sleep(1)
            self._starting -= 1
            self._fill()
            return
        self._starting -= 1
        assert ready == "ready"
        self._processes.add(pooled)
        self._idle_in.send_nowait(pooled)

    def _done(self, process: _Process, rss_kb: int) -> None:
        """Back to the idle ones, or recycled: past its tasks, its memory, or the size."""
        process.tasks += 1
        if self.max_tasks is not None and process.tasks >= self.max_tasks:
            self._retire(process, f"after {process.tasks} tasks (max tasks per child)")
        elif self.max_memory_kb is not None and rss_kb > self.max_memory_kb:
            self._retire(process, f"as its memory ({rss_kb} KB) is over {self.max_memory_kb} KB")
        elif len(self._processes) > self.size:
            self._retire(process, "as the pool shrank")
        else:
            self._idle_in.send_nowait(process)

    def _retire(self, process: _Process, why: str) -> None:
        logger.info("Pool process %d recycled %s", process.pid, why)
        self._processes.discard(process)
        process.pipe.send(None)
        assert self._group is not None
        self._group.start_soon(self._reap, process)
        self._fill()

    def _kill(self, process: _Process, why: str) -> None:
        logger.warning("Pool process %d killed: %s; starting another", process.pid, why)
        process.process.kill()
        self._lost(process)

    def _lost(self, process: _Process) -> None:
        self._processes.discard(process)
        if self._group is not None:
            self._group.start_soon(self._reap, process)
            self._fill()

    async def _reap(self, process: _Process) -> None:
        await anyio.to_thread.run_sync(process.process.join, STOP_TIMEOUT, abandon_on_cancel=True)
        if process.process.exitcode is None:
            process.process.kill()
        process.pipe.close()

    async def _stop_all(self) -> None:
        processes = list(self._processes)
        self._processes.clear()
        for process in processes:
            with contextlib.suppress(OSError):  # one that died already
                process.pipe.send(None)
        async with anyio.create_task_group() as reaping:
            for process in processes:
                reaping.start_soon(self._reap, process)


def _exception(pickled: bytes | None, kind: str, message: str, text: str) -> BaseException:
    """The exception a pool process sent, its traceback text as its cause."""
    exc: BaseException
    try:
        exc = pickle.loads(pickled) if pickled is not None else task_error_type(kind)(message)
    except Exception:
        exc = task_error_type(kind)(message)
    exc.__cause__ = RemoteTraceback(text)
    return exc


def _how_it_ended(status: int | None) -> str:
    if status is None:
        return "its pipe closed"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


# -- in the pool process ------------------------------------------------------------


def serve(pipe: multiprocessing.connection.Connection, settings: PoolSettings) -> None:
    """A pool process: import the app, then run what comes down the pipe until told to stop
    (None) or the worker's end closes."""
    from taskq import daemon, logs
    from taskq.task import Request

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the worker's
    signal.signal(signal.SIGUSR1, _soft_limit)
    logfile = settings.logfile
    if logfile is None:  # a terminal's hangup is the worker's too
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    else:  # the worker passes its SIGHUP on: logrotate moved the file away
        signal.signal(signal.SIGHUP, lambda signum, frame: daemon.take_logfile(logfile))
    logs.configure_logging(settings.log_level, settings.log_format, settings.hostname)
    app = _import_app(settings.app_spec)
    app.import_task_modules()
    conf = app.conf
    accept, max_bytes = frozenset(conf.accept_content), conf.task_max_message_bytes
    pipe.send("ready")
    while True:
        try:
            work = pipe.recv()
        except EOFError:
            return
        if work is None:
            return
        body, queue, delivery_count = work
        message = decode(body, accept, max_bytes)
        request = Request(
            message, settings.hostname, queue, delivery_count, conf.task_default_exchange
        )
        global _running
        try:
            _running = True
            try:
                value = app.get_task(message.task).run_sync(request)
            finally:
                _running = False
            reply: tuple[str, Any] = ("ok", get_serializer(message.content_type).dumps(value))
        except BaseException as exc:  # every failure goes back to the worker
            reply = ("error", _portable(exc))
        pipe.send((*reply, request.children, request.retries_exhausted, resident_kb()))


_running = False  # a task's function is running in this pool process


def _soft_limit(signum: int, frame: object) -> None:
    if _running:  # a signal that comes late, after the function returned, is dropped
        raise SoftTimeLimitExceeded("soft time limit exceeded")


def _portable(exc: BaseException) -> tuple[bytes | None, str, str, str]:
    try:
        pickled: bytes | None = pickle.dumps(exc)
    except Exception:
        pickled = None
    text = "".join(traceback.format_exception(exc))
    return pickled, exception_type(exc), str(exc), text


def _import_app(spec: str) -> Any:
    import importlib

    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "app")


def resident_kb() -> int:
    """This process's resident memory now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
