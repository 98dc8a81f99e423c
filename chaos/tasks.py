"""The tasks that the scenarios' `taskq worker` processes run (`-A chaos.tasks:app`).

Broker, store and queue come from the TASKQ_* variables the harness sets. Every task counts
itself before anything else: it appends `<event> <key> <epoch seconds>` to a file of its
own process under $CHAOS_RECORDS (see `chaos.records`), one write(2) per line on an O_APPEND
descriptor, so a SIGKILL neither loses a line that was written nor tears one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

from taskq import Task, TaskQ

RECORDS_VARIABLE = "CHAOS_RECORDS"

app = TaskQ("chaos")
_records: int | None = None  # this process's file descriptor


def record(event: str, key: str) -> None:
    global _records
    if _records is None:
        path = os.path.join(os.environ[RECORDS_VARIABLE], f"{os.getpid()}.log")
        _records = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = f"{event} {key.replace(chr(10), ' ')} {time.time():.6f}\n"
    os.write(_records, line.encode())


@app.task(name="chaos.work", bind=True, acks_late=True)
async def work(self: Task[Any, Any], n: int, seconds: float) -> int:
    """The kill storms' task (and the chord's members): `start`, a sleep, `end`; returns n."""
    record("start", self.request.id)
    await anyio.sleep(seconds)
    record("end", self.request.id)
    return n


@app.task(name="chaos.collect", bind=True)
async def collect(self: Task[Any, Any], results: list[int]) -> int:
    """A chord callback over `work` members 0..n-1: records how many results it got and
    whether they came in order."""
    ordered = results == list(range(len(results)))
    record("callback", f"{len(results)}:{'ordered' if ordered else 'unordered'}")
    return len(results)


@app.task(name="chaos.tick", bind=True)
async def tick(self: Task[Any, Any]) -> None:
    """A beat entry: records the tick it was published for."""
    record("tick", repr(self.request.headers["beat_scheduled_at"]))


@app.task(name="chaos.target_late", bind=True, acks_late=True)
async def target_late(self: Task[Any, Any], mark: object) -> None:
    """What the garbage scenarios' envelopes call (acked after it ran)."""
    record("ran", garbage_mark(self, mark))


@app.task(name="chaos.target_early", bind=True)
async def target_early(self: Task[Any, Any], mark: object) -> None:
    """As `target_late`, acked before it runs."""
    record("ran", garbage_mark(self, mark))


def garbage_mark(task: Task[Any, Any], mark: object) -> str:
    """The input's mark, wherever the garbage left it: the header, the argument, the id."""
    header = task.request.headers.get("chaos_mark")
    for candidate in (header, mark):
        if isinstance(candidate, str):
            return candidate
    return task.request.id
