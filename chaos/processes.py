"""The `taskq worker` and `taskq beat` subprocesses of a scenario, signalled by pid only.

Each runs `-A chaos.tasks:app` from the repository root with its output in a log file of its
own. A process remembers whether the harness ended it, so one that exited by itself (a
crash) is told apart from one that was killed on purpose.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from chaos.servers import ROOT

APP = "chaos.tasks:app"
WORKER_READY = " ready: queues "  # "Worker <name> ready: queues default, concurrency ..."
BEAT_READY = " started (lease "  # "Beat <name> started (lease 3.0s, timezone UTC)"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 15


class ProcessError(RuntimeError):
    """A process did not start; the message carries the tail of its log."""


class TaskqProcess:
    """One `taskq <command>` process."""

    def __init__(self, command: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.command = command
        self.log = log
        self.ended_by_harness = False
        argv = [sys.executable, "-m", "taskq", command, "-A", APP, "--loglevel", "info", *args]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is the harness's to handle
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def died_by_itself(self) -> bool:
        return not self.ended_by_harness and not self.alive

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    async def wait_for_output(self, text: str, timeout: float = READY_TIMEOUT) -> None:
        """Returns once `text` is in the log; `ProcessError` if the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive:
                raise ProcessError(f"taskq {self.command} exited ({self.describe()})")
            if time.monotonic() > deadline:
                raise ProcessError(f"taskq {self.command}: no {text!r} within {timeout:g}s")
            await anyio.sleep(POLL_INTERVAL)

    def describe(self) -> str:
        status = "running" if self.alive else f"exit status {self.process.returncode}"
        return f"pid {self.pid}, {status}, log {self.log}:\n{self.tail()}"

    def kill(self) -> None:
        """SIGKILL: the process settles nothing."""
        if self.alive:
            self.ended_by_harness = True
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), SIGKILL after STOP_TIMEOUT."""
        if not self.alive:
            return
        self.ended_by_harness = True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Processes:
    """A scenario's `taskq worker` (or `taskq beat`) processes, all with the same arguments."""

    def __init__(
        self, command: str, env: dict[str, str], directory: Path, args: Sequence[str] = ()
    ) -> None:
        self.command = command
        self.ready_text = WORKER_READY if command == "worker" else BEAT_READY
        self.env = env
        self.directory = directory
        self.args = list(args)
        self.started: list[TaskqProcess] = []
        self.kills = 0

    async def start(self) -> TaskqProcess:
        """One more process; returns once it says it is ready."""
        log = self.directory / f"{self.command}-{len(self.started)}.log"
        process = TaskqProcess(self.command, self.args, self.env, log)
        self.started.append(process)
        await process.wait_for_output(self.ready_text)
        return process

    @property
    def running(self) -> list[TaskqProcess]:
        return [process for process in self.started if process.alive]

    @property
    def died_by_themselves(self) -> list[TaskqProcess]:
        return [process for process in self.started if process.died_by_itself]

    def kill_one(self, rng: random.Random) -> TaskqProcess:
        """SIGKILL one running process, picked at random."""
        return self.kill(rng.choice(self.running))

    def kill(self, victim: TaskqProcess) -> TaskqProcess:
        victim.kill()
        self.kills += 1
        return victim

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()

    def logs(self) -> str:
        return "\n".join(process.output() for process in self.started)
