"""What the dashboard watches while it runs: the task events (into the `TaskWindow`) and, every
`inspect_interval` seconds, what the workers answer to inspect (`WorkersView`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from taskq.contrib.dashboard.window import TaskWindow, Throughput
from taskq.control import Replies

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.dashboard")

RECONNECT_DELAY = 1.0  # seconds between attempts while the broker is away
INSPECTED = ("stats", "active", "reserved", "active_queues")


@dataclass(slots=True)
class WorkersView:
    """The last inspect round: every worker known by heartbeat and what each answered."""

    presence: Replies = field(default_factory=Replies)
    answers: dict[str, Replies] = field(default_factory=dict)
    at: float | None = None

    def workers(self) -> list[dict[str, Any]]:
        """One row per worker, online ones first, by name."""
        names = self.presence.workers.keys() | self.presence.answered
        rows = []
        for name in names:
            seen = self.presence.workers.get(name)
            online = seen is None or seen.online
            row: dict[str, Any] = {
                "name": name,
                "online": online and name not in self.presence.missing,
                "queues": seen.queues if seen else [],
                "active_count": seen.active if seen else 0,
                "last_heartbeat": seen.last_heartbeat if seen else None,
            }
            for command in INSPECTED:
                row[command] = self.answers.get(command, Replies()).answers.get(name)
            rows.append(row)
        return sorted(rows, key=lambda row: (not row["online"], row["name"]))


class Monitor:
    """Runs `watch_events` and `watch_workers` (`run`, in a task group of the server's
    lifespan); `changes` counts the changes of what the pages show (`wait_change`)."""

    def __init__(self, app: TaskQ, max_tasks: int, inspect_interval: float) -> None:
        if inspect_interval <= 0:
            raise ValueError(f"inspect_interval must be positive seconds, not {inspect_interval}")
        self.app = app
        self.window = TaskWindow(max_tasks)
        self.throughput = Throughput()
        self.workers = WorkersView()
        self.inspect_interval = inspect_interval
        self.changes = 0
        self._changed = anyio.Event()
        self.events_since: float | None = None  # when the events subscription was in place

    def bump(self) -> None:
        self.changes += 1
        self._changed.set()

    async def wait_change(self, seen: int) -> int:
        """Wait until `changes` is past `seen`; returns it."""
        while self.changes == seen:
            if self._changed.is_set():  # set for a change that was seen already
                self._changed = anyio.Event()
            await self._changed.wait()
        return self.changes

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch_events)
            tg.start_soon(self.watch_workers)

    async def watch_events(self) -> None:
        while True:
            ready = anyio.Event()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._mark_ready, ready)
                    async for event in self.app.events.receive(ready=ready):
                        record = self.window.apply(event)
                        if record is not None:
                            self.throughput.count(record.state, event.get("timestamp"))
                        self.bump()
            except Exception as exc:  # the broker went away: read again once it is back
                logger.warning("Dashboard lost the task events (%s); retrying", exc)
                self.events_since = None
                await anyio.sleep(RECONNECT_DELAY)

    async def _mark_ready(self, ready: anyio.Event) -> None:
        await ready.wait()
        self.events_since = time.time()

    async def watch_workers(self) -> None:
        while True:
            try:
                await self.inspect()
            except Exception as exc:
                logger.warning("Dashboard could not inspect the workers: %s", exc)
            await anyio.sleep(self.inspect_interval)

    async def inspect(self) -> None:
        """One round: ping (whom heartbeats know) and each of `INSPECTED`, at once."""
        inspect = self.app.control.inspect(timeout=min(1.0, self.inspect_interval))
        answers: dict[str, Replies] = {}

        async def ask(command: str) -> None:
            answers[command] = await inspect.ask(command)

        async with anyio.create_task_group() as tg:
            for command in ("ping", *INSPECTED):
                tg.start_soon(ask, command)
        presence = answers.pop("ping")
        self.workers = WorkersView(presence, answers, time.time())
        self.bump()
