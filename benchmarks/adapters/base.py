"""What every library adapter provides, and the worker process they all run the same way.

An adapter module defines the library's app and tasks at import time (its worker CLI imports
the same module) and one `Adapter` subclass that the workloads drive. Standard library only,
and light: every library's worker process imports it too (the measuring code, whose
`statistics` pulls in `decimal` and `fractions`, is imported where the timer uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from benchmarks.tasks import Kind

# Set by the suite for the runner and inherited by the worker it starts.
BROKER_URL = "BENCH_BROKER_URL"
RESULT_URL = "BENCH_RESULT_URL"  # a Redis URL: the result backend of every library
REDIS_PID = "BENCH_REDIS_PID"  # that Redis's redis-server, whose CPU the workloads measure too
CONCURRENCY = "BENCH_CONCURRENCY"  # read by libraries whose CLI has no flag for it
THREADS = "BENCH_THREADS"

# The workloads whose worker runs several processes (benchmarks.workloads).
MULTIPROCESS_WORKLOADS = frozenset({"drain_processes", "cpu_processes"})

BATCH_SIZE = 1000  # messages per bulk call, for every library with a bulk API
WORKER_STOP_TIMEOUT = 30.0


class NotAvailable(Exception):
    """The library (or this broker of it) cannot run the workload; the message says why."""


@dataclass(frozen=True)
class WorkerSpec:
    """How the workload wants the worker run; each adapter maps it to its library's options."""

    kind: Kind
    concurrency: int = 100
    threads: int = 10
    processes: int = 1  # worker processes (a supervisor's, or Celery's prefork children)
    pool: str = "thread"  # where plain functions run: "thread", or "process" (one per core)


def broker_url() -> str:
    return os.environ[BROKER_URL]


def result_url() -> str:
    return os.environ[RESULT_URL]


def redis_pid() -> int:
    return int(os.environ[REDIS_PID])


def env_int(name: str, default: int) -> int:
    """A worker setting that the library's CLI cannot take as a flag (see CONCURRENCY)."""
    return int(os.environ.get(name, default))


def batches(count: int) -> Iterable[int]:
    """`count` split into BATCH_SIZE chunks."""
    for start in range(0, count, BATCH_SIZE):
        yield min(BATCH_SIZE, count - start)


async def gather_batches(count: int, publish: Callable[[], Awaitable[object]]) -> None:
    """Bulk publishing for a library without a bulk API: BATCH_SIZE concurrent single calls."""
    for size in batches(count):
        await asyncio.gather(*(publish() for _ in range(size)))


class WorkerHandle(ABC):
    """A running worker the timer can pause, resume and measure."""

    @abstractmethod
    def pids(self) -> list[int]: ...

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    async def pause(self) -> None: ...

    @abstractmethod
    async def resume(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


class WorkerProcess(WorkerHandle):
    """A library's own worker command, in its own process group (so its forks come along).

    Pausing is SIGSTOP to that group: the timed window then starts on a warmed-up worker
    facing a full queue, without its start-up in the figures.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as output:
            self._process = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self) -> list[int]:
        from benchmarks import measure

        return measure.descendants(self._process.pid)

    def alive(self) -> bool:
        return self._process.poll() is None

    async def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    async def resume(self) -> None:
        self._signal(signal.SIGCONT)

    async def stop(self) -> None:
        """SIGTERM to the command (every library's warm shutdown; a supervisor forwards it
        to its forks, which take a second one as "hurry up"), SIGKILL if it lingers."""
        self._signal(signal.SIGCONT)
        self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self._process.wait, WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            await asyncio.to_thread(self._process.wait)
        # Forks that outlived their parent (the group still exists) are ours too.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)


class Adapter:
    """One library on one broker, driven by the workloads. A subclass implements every
    method that raises NotImplementedError here."""

    library: ClassVar[str]
    #: Whether the adapter runs several worker processes or a process pool (WorkerSpec).
    multiprocess: ClassVar[bool] = False
    #: How `publish_batch` publishes: the bulk API's name, or why there is none.
    batch_method: ClassVar[str]

    def unsupported(self, workload: str) -> str | None:
        """Why this library cannot run `workload` (asked before any worker starts), or None.

        By default a library lacks chord, chain or a blocking publish (`enqueue_sync`) when its
        adapter does not override them.
        """
        canvas = {"chord": Adapter.chord, "chain": Adapter.chain}
        if workload in canvas and canvas[workload] is getattr(type(self), workload):
            return f"{self.library} has no {workload}"
        if workload == "enqueue_sync" and type(self).publish_sync is Adapter.publish_sync:
            return f"the {self.library} adapter has no blocking publish"
        if workload in MULTIPROCESS_WORKLOADS and not self.multiprocess:
            return f"the {self.library} adapter runs one worker process, with no process pool"
        return None

    async def open(self) -> None:
        """Connect the producer side."""

    async def close(self) -> None:
        """Disconnect the producer side."""

    async def publish(self, kind: Kind) -> None:
        """Publish one task of `kind`, awaited."""
        raise NotImplementedError

    def publish_sync(self, kind: Kind) -> None:
        """Publish one task of `kind` through the library's blocking API, from a thread that
        runs no event loop."""
        raise NotAvailable(self.unsupported("enqueue_sync"))

    async def publish_batch(self, kind: Kind, count: int) -> None:
        """Publish `count` tasks of `kind` through the bulk API (see `batch_method`)."""
        raise NotImplementedError

    async def round_trip(self) -> None:
        """Publish one no-op task and wait for its result."""
        raise NotImplementedError

    async def chord(self, size: int) -> None:
        """Publish `size` no-op members and a callback that runs after all of them."""
        raise NotAvailable(self.unsupported("chord"))

    async def chain(self, length: int) -> None:
        """Publish a chain of `length` tasks, each passing its result to the next."""
        raise NotAvailable(self.unsupported("chain"))

    async def purge(self) -> None:
        """Drop what a workload left queued (Redis is flushed between runs anyway)."""

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        """The library's worker command for `spec`."""
        raise NotImplementedError

    def worker_env(self, spec: WorkerSpec) -> dict[str, str]:
        return {CONCURRENCY: str(spec.concurrency), THREADS: str(spec.threads)}

    async def start_worker(self, spec: WorkerSpec, log: Path) -> WorkerHandle:
        return WorkerProcess(self.worker_argv(spec), self.worker_env(spec), log)


def console_script(name: str) -> str:
    """A command installed in this interpreter's virtualenv."""
    return str(Path(sys.executable).parent / name)
