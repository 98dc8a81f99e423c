"""The dashboard's memory of recent tasks: one `TaskRecord` per task, built from its events, in
a `TaskWindow` that keeps the newest `max_tasks` (older ones are read from the result store by
id), and the per-second `Throughput` of the last minutes."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from taskq import events, states

REJECTED = "REJECTED"  # dead-lettered unrun: a state only events tell of
STATE_OF_EVENT = {
    events.SENT: states.PENDING,
    events.RECEIVED: states.RECEIVED,
    events.STARTED: states.STARTED,
    events.SUCCEEDED: states.SUCCESS,
    events.FAILED: states.FAILURE,
    events.RETRIED: states.RETRY,
    events.REVOKED: states.REVOKED,
    events.REJECTED: REJECTED,
}
TASK_STATES = (*sorted(states.ALL_STATES), REJECTED)
TIMELINE_LIMIT = 50  # events kept per task: a task retried forever does not grow without end
# Fields an event may carry that a record keeps as they are.
COPIED = ("name", "args", "kwargs", "retries", "eta", "expires", "root_id", "parent_id", "queue")


@dataclass(slots=True)
class TaskRecord:
    """What the events told of one task (args, kwargs and result as their reprs)."""

    id: str
    state: str = states.PENDING
    name: str | None = None
    args: str | None = None
    kwargs: str | None = None
    queue: str | None = None
    worker: str | None = None
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    finished: float | None = None
    runtime: float | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    reason: str | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, event: dict[str, Any]) -> None:
        kind, at = event.get("type"), event.get("timestamp")
        for name in COPIED:
            if event.get(name) is not None:
                setattr(self, name, event[name])
        if kind == events.SENT:
            self.sent = at
        else:
            self.worker = event.get("hostname") or self.worker
        if kind == events.RECEIVED:
            self.received = at
        elif kind == events.STARTED:
            self.started = at
        elif kind in (events.SUCCEEDED, events.FAILED, events.REVOKED, events.REJECTED):
            self.finished = at
        if kind == events.SUCCEEDED:
            self.result = event.get("result")
        if kind in (events.FAILED, events.RETRIED):
            self.exception, self.traceback = event.get("exception"), event.get("traceback")
        if kind == events.REJECTED:
            self.reason = event.get("reason")
        if event.get("runtime") is not None:
            self.runtime = event["runtime"]
        # A late `task-sent` (it travels apart from the worker's events) changes no state.
        if kind != events.SENT or self.state == states.PENDING:
            self.state = STATE_OF_EVENT.get(str(kind), self.state)
        self.timeline.append(
            {"type": kind, "timestamp": at, "hostname": event.get("hostname")}
            | {name: event[name] for name in ("exception", "reason") if event.get(name)}
        )
        del self.timeline[:-TIMELINE_LIMIT]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What the tasks page and `/api/tasks` select: every given field must match (`name` as a
    substring), `since`/`until` bound the first time the task was seen (epoch seconds)."""

    state: str | None = None
    name: str | None = None
    queue: str | None = None
    worker: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, record: TaskRecord) -> bool:
        seen = record.sent or record.received or record.started or 0.0
        return (
            (self.state is None or record.state == self.state)
            and (self.name is None or self.name in (record.name or ""))
            and (self.queue is None or record.queue == self.queue)
            and (self.worker is None or record.worker == self.worker)
            and (self.since is None or seen >= self.since)
            and (self.until is None or seen <= self.until)
        )


class TaskWindow:
    """The newest `max_tasks` tasks by when they were first seen; the oldest leaves first."""

    def __init__(self, max_tasks: int) -> None:
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1, not {max_tasks}")
        self.max_tasks = max_tasks
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    def apply(self, event: dict[str, Any]) -> TaskRecord | None:
        task_id = event.get("uuid")
        if not isinstance(task_id, str) or not task_id:
            return None  # a rejected message that had no id: nothing to file it under
        record = self._records.get(task_id)
        if record is None:
            record = self._records[task_id] = TaskRecord(task_id)
            if len(self._records) > self.max_tasks:
                self._records.popitem(last=False)
        record.apply(event)
        return record

    def newest_first(self) -> Iterator[TaskRecord]:
        return reversed(self._records.values())

    def select(self, wanted: TaskFilter, offset: int, limit: int) -> tuple[list[TaskRecord], int]:
        """The page of matching records (newest first) and how many match in all."""
        page: list[TaskRecord] = []
        total = 0
        for record in self.newest_first():
            if wanted.matches(record):
                if offset <= total < offset + limit:
                    page.append(record)
                total += 1
        return page, total

    def children_of(self, task_id: str) -> list[TaskRecord]:
        return [record for record in self._records.values() if record.parent_id == task_id]


class Throughput:
    """Tasks succeeded and failed per second over the last `seconds`."""

    def __init__(self, seconds: int = 600) -> None:
        self.seconds = seconds
        self._counts: deque[tuple[int, list[int]]] = deque()

    def count(self, state: str, at: float | None = None) -> None:
        if state not in (states.SUCCESS, states.FAILURE):
            return
        second = int(at if at is not None else time.time())
        if not self._counts or self._counts[-1][0] < second:
            self._counts.append((second, [0, 0]))
            while self._counts[0][0] <= second - self.seconds:
                self._counts.popleft()
        # An event a little late for its second is counted in the newest one.
        self._counts[-1][1][0 if state == states.SUCCESS else 1] += 1

    def series(self, now: float | None = None) -> list[tuple[int, int, int]]:
        """(second, succeeded, failed) for each of the last `seconds`, oldest first."""
        end = int(now if now is not None else time.time())
        counts = {second: pair for second, pair in self._counts}
        return [
            (second, *counts.get(second, (0, 0)))
            for second in range(end - self.seconds + 1, end + 1)
        ]

    def rates(self, bucket: int = 10, now: float | None = None) -> list[tuple[int, float, float]]:
        """Tasks per second succeeded and failed, averaged over each `bucket` seconds:
        (bucket's first second, succeeded/s, failed/s), oldest first."""
        series = self.series(now)
        return [
            (
                series[start][0],
                sum(row[1] for row in series[start : start + bucket]) / bucket,
                sum(row[2] for row in series[start : start + bucket]) / bucket,
            )
            for start in range(0, len(series), bucket)
        ]
