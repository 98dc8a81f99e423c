"""The garbage collector of a `taskq worker` process (`worker_gc_threshold`).

CPython collects its youngest generation every 700 allocations net of frees. A worker
allocates a few hundred objects a task, and its tasks in flight, their frames and futures,
are young and alive at every collection, so each pass walks them again without freeing them:
measured on a drain of no-op tasks, that was 10-20 % of the worker's CPU per task. A higher
threshold makes the passes rarer; garbage without cycles is freed at once as ever, and cyclic
garbage waits a little longer. Only a worker process's own: `Worker` embedded in an
application leaves that application's collector alone.
"""

from __future__ import annotations

import gc


def tune_collector(threshold: int | None) -> None:
    """Collect the youngest generation every `threshold` allocations (None: Python's own)."""
    if threshold is not None:
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(threshold, middle, oldest)
