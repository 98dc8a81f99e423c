"""`taskq worker --processes N`: a small process that runs N worker processes and keeps them.

Each child is a whole `taskq worker` (its own event loop and connections, the same queues),
named `<name>-1` ... `<name>-N` (with `--metrics-port`, one port for them all:
`taskq.worker.scrape`), in the supervisor's process group (so that a SIGSTOP to the group,
or a terminal's job control, reaches them all). The supervisor passes SIGTERM and SIGINT on to
every child as SIGTERM (the first is a warm shutdown, a second a cold one; a child ignores the
SIGINT of a terminal's Ctrl-C, which reaches the whole group, so that it counts once) and
SIGHUP (reopen the log file). A child that
dies is logged and started again, at once the first time and after a growing delay (1 s, 2 s,
... 30 s) while it keeps dying within `STABLE_AFTER` seconds of its start. A child that exits
with `RECYCLED` asked for it (`--max-tasks-per-child`, `--max-memory-per-child`) after a warm
drain and is started again at once; one that exits 0 was shut down (the `shutdown` control
command) and is not; one that exits 2 cannot start (the app does not load, the broker refuses
the login): the supervisor stops the others and exits 2. It exits when every child has.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from taskq.daemon import reopen_logfile

if TYPE_CHECKING:
    from taskq.worker.scrape import MergedScrape

logger = logging.getLogger("taskq.supervisor")

RECYCLED = 75  # a child's exit status: recycled after a warm drain, start another (EX_TEMPFAIL)
CANNOT_START = 2  # taskq's exit status for what running again will not mend
STABLE_AFTER = 10.0  # seconds: a child that ran this long before dying is restarted at once
MAX_BACKOFF = 30.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Supervisor:
    """Runs `python -m taskq worker <arguments> --hostname <name>-i` `count` times."""

    def __init__(
        self, arguments: Sequence[str], count: int, name: str, metrics_port: int | None = None
    ) -> None:
        self.arguments = list(arguments)
        self.names = [f"{name}-{i}" for i in range(1, count + 1)]
        self._scrape: MergedScrape | None = None
        self._child_ports: dict[str, int] = {}
        if metrics_port is not None:
            # The HTTP server and client of the merged /metrics: a supervisor without a port,
            # and every worker process it starts, loads neither.
            from taskq.worker.scrape import MergedScrape, free_port

            self._child_ports = {name: free_port() for name in self.names}
            self._scrape = MergedScrape(metrics_port, self._child_ports)
        self.exit_status = 0
        self._children: dict[str, anyio.abc.Process] = {}
        self._stopping = False
        self._stopped = anyio.Event()

    async def run(self) -> int:
        """Start the children, keep them until they have all stopped; the exit status."""
        logger.info(
            "Supervisor starting %d worker processes: %s", len(self.names), ", ".join(self.names)
        )
        if self._scrape is not None:
            self._scrape.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forward_signals)
                async with anyio.create_task_group() as children:
                    for name in self.names:
                        children.start_soon(self._keep, name)
                tg.cancel_scope.cancel()
        finally:
            if self._scrape is not None:
                await anyio.to_thread.run_sync(self._scrape.stop)
        logger.info("Supervisor stopped: every worker process has exited")
        return self.exit_status

    def command(self, name: str) -> list[str]:
        port = self._child_ports.get(name)
        return [
            sys.executable, "-m", "taskq", "worker", *self.arguments,
            "--hostname", name, "--processes", "1", "--supervised",
            *(["--metrics-port", str(port)] if port else []),
        ]  # fmt: skip

    async def _keep(self, name: str) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            child = await anyio.open_process(
                self.command(name),
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
            )
            self._children[name] = child
            try:
                status = await child.wait()
            finally:
                del self._children[name]
            if self._stopping:
                return
            if status == 0:
                logger.info("Worker process %s (pid %d) was shut down", name, child.pid)
                return
            if status == CANNOT_START:
                logger.error("Worker process %s cannot start (exit status 2): stopping", name)
                self.exit_status = CANNOT_START
                self.stop()
                return
            if status == RECYCLED:
                logger.info(
                    "Worker process %s (pid %d) recycled; starting another", name, child.pid
                )
                failures = 0
                continue
            failures = 1 if time.monotonic() - started >= STABLE_AFTER else failures + 1
            delay = 0.0 if failures == 1 else min(MAX_BACKOFF, 2.0 ** (failures - 2))
            logger.error(
                "Worker process %s (pid %d) %s; starting a replacement%s",
                name,
                child.pid,
                _how_it_ended(status),
                f" in {delay:g} s" if delay else "",
            )
            with anyio.move_on_after(delay):
                await self._stopped.wait()

    def stop(self) -> None:
        """SIGTERM to every child (a second one is a cold shutdown); none is started again."""
        self._stopping = True
        self._stopped.set()
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, signum: signal.Signals) -> None:
        for child in list(self._children.values()):
            if child.returncode is None:
                child.send_signal(signum)

    async def _forward_signals(self) -> None:
        with anyio.open_signal_receiver(*FORWARDED) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reopen_logfile()
                    self._signal_children(signal.SIGHUP)
                    continue
                if not self._stopping:
                    logger.info(
                        "Supervisor: warm shutdown of %d worker processes", len(self._children)
                    )
                self.stop()


def _how_it_ended(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def follow_supervisor() -> None:
    """In a child: be sent SIGTERM (a warm shutdown) if the supervisor dies without stopping
    it, say killed with SIGKILL (Linux; elsewhere the child outlives it)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
