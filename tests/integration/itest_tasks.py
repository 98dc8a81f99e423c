"""Tasks run by the worker subprocesses of the integration tests.

The broker comes from TASKQ_BROKER_URL, so the same module serves every broker.
"""

import gc
import json
import logging
import os
import sys
import threading
import time

import anyio

from taskq import TaskQ, group
from taskq.worker.worker import Worker

app = TaskQ("itest")

_running = 0
_peak = 0


@app.task(name="itest.add")
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="itest.same")
async def same(value: object) -> object:
    return value


@app.task(name="itest.concurrent")
async def concurrent(seconds: float) -> int:
    """Returns the peak number of these tasks seen running at once in this worker."""
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    try:
        await anyio.sleep(seconds)
    finally:
        _running -= 1
    return _peak


@app.task(name="itest.in_thread")
def in_thread(x: int) -> dict[str, object]:
    return {"double": x * 2, "main_thread": threading.current_thread() is threading.main_thread()}


@app.task(name="itest.marked", acks_late=True)
async def marked(marker: str, seconds: float) -> int:
    """Writes 'started <pid>' to `marker`, sleeps, returns the pid that finished it."""
    await anyio.Path(marker).write_text(f"started {os.getpid()}\n")
    await anyio.sleep(seconds)
    return os.getpid()


@app.task(name="itest.marked_early")
async def marked_early(marker: str, seconds: float) -> int:
    """As `marked`, but acked before it runs (the default)."""
    await anyio.Path(marker).write_text(f"started {os.getpid()}\n")
    await anyio.sleep(seconds)
    return os.getpid()


@app.task(name="itest.global_limited", rate_limit="10/s", rate_limit_scope="global")
async def global_limited() -> float:
    """Returns when it started: the starts of all workers together keep the global rate."""
    return time.time()


@app.task(name="itest.ran_at")
async def ran_at() -> float:
    """When it ran (epoch seconds): a delayed call's proof that it did not run before its eta."""
    return time.time()


@app.task(name="itest.slow_square", acks_late=True)
async def slow_square(x: int, seconds: float) -> int:
    await anyio.sleep(seconds)
    return x * x


@app.task(name="itest.slow_increment", acks_late=True)
async def slow_increment(value: int, seconds: float) -> int:
    await anyio.sleep(seconds)
    return value + 1


@app.task(name="itest.finished_at", acks_late=True)
async def finished_at(seconds: float) -> float:
    """When it finished, after `seconds`: a drain's completions over time (fail-over tests)."""
    await anyio.sleep(seconds)
    return time.time()


@app.task(name="itest.count_calls")
async def count_calls(results: list[int], marker: str) -> int:
    """A chord callback of `slow_square`s that leaves one line in `marker` per call: how
    many results it got, and whether they are the squares in order."""
    ordered = results == [i * i for i in range(len(results))]
    async with await anyio.open_file(marker, "a") as out:
        await out.write(f"{len(results)} {'ordered' if ordered else 'unordered'}\n")
    return len(results)


@app.task(name="itest.record_tick", bind=True)
async def record_tick(self, marker: str) -> None:  # type: ignore[no-untyped-def]
    """Appends the beat tick it was published for to `marker`."""
    async with await anyio.open_file(marker, "a") as out:
        await out.write(f"{self.request.headers['beat_scheduled_at']}\n")


# -- canvas (tests/integration/test_canvas_parity.py) ---------------------------------


@app.task(name="itest.identity")
async def identity(value: object) -> object:
    return value


@app.task(name="itest.tsum")
async def tsum(values: list[int]) -> int:
    return sum(values)


@app.task(name="itest.fail")
async def fail(*args: object) -> None:
    raise ValueError("boom")


@app.task(name="itest.note")
async def note(*args: object) -> list[object]:
    """A callback that appends its arguments but the last (a file) to that file, one JSON
    line per call: what ran, and how many times."""
    *values, marker = args
    async with await anyio.open_file(str(marker), "a") as out:
        await out.write(json.dumps(values) + "\n")
    return values


@app.task(name="itest.add_replaced", bind=True)
async def add_replaced(self, x: int, y: int) -> int:  # type: ignore[no-untyped-def]
    """x + y, computed by the chain it is replaced by: add(x, y) then add(0)."""
    return self.replace(add.s(x, y) | add.s(0))  # type: ignore[no-any-return]


@app.task(name="itest.spread", bind=True)
async def spread(self, values: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """Each value plus one, by a group it is replaced by."""
    return self.replace(group(add.s(v, 1) for v in values))  # type: ignore[no-any-return]


@app.task(name="itest.grow_chord", bind=True)
async def grow_chord(self, x: int, times: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Adds `add(x, 0)`, then a group of `add(x, 1)`... to its chord, `times` members in
    all; returns their ids."""
    added = [await self.add_to_chord(add.s(x, 0))]
    for extra in range(1, times):
        added.append(await self.add_to_chord(group(add.s(x, extra), add.s(x, extra))))
    return [result.id for result in added]


@app.task(name="itest.grow_chord_in_thread", bind=True)
def grow_chord_in_thread(self, x: int) -> str:  # type: ignore[no-untyped-def]
    """A plain function (run in a thread) adding `add(x, 0)` to its chord; returns its id."""
    return self.add_to_chord_sync(add.s(x, 0)).id  # type: ignore[no-any-return]


@app.task(name="itest.touch")
async def touch(directory: str) -> int:
    """Appends a line to the file named after this worker's pid in `directory`."""
    async with await anyio.open_file(os.path.join(directory, str(os.getpid())), "a") as out:
        await out.write("ran\n")
    return os.getpid()


@app.control.command
async def nap(worker: Worker, seconds: dict[str, float]) -> str:
    """A control command answering with the worker's name after `seconds[its name]` (none if
    not named): a worker slow to answer, on demand."""
    await anyio.sleep(seconds.get(worker.hostname, 0.0))
    return worker.hostname


# -- operating a worker (tests/integration/test_worker_ops.py, test_worker_logs.py) ----


@app.task(name="itest.fail_to_dead_letters", autoretry_for=(ValueError,), max_retries=0)
async def fail_to_dead_letters(message: str) -> None:
    raise ValueError(message)


@app.task(name="itest.log_inside")
async def log_inside(text: str) -> None:
    logging.getLogger("itest").info("inside: %s", text)


@app.task(name="itest.retry_once", bind=True)
async def retry_once(self) -> int:  # type: ignore[no-untyped-def]
    """Asks for one retry, then succeeds: returns the retries it took."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return int(self.request.retries)


@app.task(name="itest.loaded_modules")
async def loaded_modules() -> list[str]:
    """The modules the worker process has imported by now."""
    return sorted(sys.modules)


@app.task(name="itest.gc_threshold")
async def gc_threshold() -> list[int]:
    return list(gc.get_threshold())


@app.task(name="itest.block_loop")
async def block_loop(seconds: float) -> None:
    """The mistake of code ported from Celery: a blocking call in an async task."""
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point


# -- the dashboard (tests/integration/test_dashboard.py) --------------------------------


@app.task(name="itest.dead_letter_until", autoretry_for=(FileNotFoundError,), max_retries=0)
async def dead_letter_until(path: str) -> str:
    """Dead-lettered (its one try fails) until the file `path` exists; then returns it."""
    return await anyio.Path(path).read_text()
