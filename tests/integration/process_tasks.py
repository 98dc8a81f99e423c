"""Tasks of the multi-process tests (tests/integration/test_processes.py): which process ran
them, CPU-bound work, a leak. The broker comes from TASKQ_BROKER_URL."""

import hashlib
import logging
import os
import signal
import time

import anyio

from taskq import SoftTimeLimitExceeded, TaskQ

app = TaskQ("ptest")
_leaked: list[bytes] = []


@app.task(name="ptest.pid", acks_late=True)
async def pid(seconds: float = 0.0) -> int:
    """The pid of the worker process that ran it, after `seconds`."""
    await anyio.sleep(seconds)
    return os.getpid()


@app.task(name="ptest.started", acks_late=True)
async def started(marker_dir: str, seconds: float) -> int:
    """Writes a file named after its pid into `marker_dir`, sleeps, returns the pid."""
    await anyio.Path(marker_dir, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    await anyio.sleep(seconds)
    return os.getpid()


@app.task(name="ptest.plain_pid")
def plain_pid() -> int:
    """A plain function: the pid of the process that ran it."""
    return os.getpid()


@app.task(name="ptest.grow_chord", bind=True)
def grow_chord(self) -> str:  # type: ignore[no-untyped-def]
    """A chord member that tries to add a member to its chord."""
    return self.add_to_chord_sync(plain_pid.si()).id  # type: ignore[no-any-return]


@app.task(name="ptest.spin")
def spin(seconds: float) -> int:
    """Burns CPU for `seconds` in pure Python (no await, no sleep a thread could skip)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return os.getpid()


@app.task(name="ptest.leak")
def leak(megabytes: int) -> int:
    """Keeps `megabytes` more of memory in its process; the pid."""
    _leaked.append(os.urandom(megabytes * 1024 * 1024))
    return os.getpid()


@app.task(name="ptest.hash")
def hash_for(milliseconds: float) -> int:
    """About `milliseconds` of SHA-256 hashing: the CPU-bound task of the benchmarks."""
    digest = b""
    deadline = time.perf_counter() + milliseconds / 1000
    while time.perf_counter() < deadline:
        digest = hashlib.sha256(digest * 64).digest()
    return os.getpid()


@app.task(name="ptest.plain_fail")
def plain_fail(text: str) -> None:
    raise ValueError(text)


@app.task(name="ptest.nap")
def nap(seconds: float) -> int:
    """A plain function that sleeps: the pid of the process that ran it."""
    time.sleep(seconds)
    return os.getpid()


@app.task(name="ptest.soft_limited")
def soft_limited(seconds: float) -> str:
    """Spins until its soft time limit interrupts it, then cleans up."""
    try:
        spin(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(name="ptest.log_plain")
def log_plain(text: str) -> int:
    """Logs `text` from the process that runs it (a pool process, with --pool process)."""
    logging.getLogger("ptest").warning(text)
    return os.getpid()


@app.task(name="ptest.die")
def die() -> None:
    """Kills the process that runs it."""
    os.kill(os.getpid(), signal.SIGKILL)
