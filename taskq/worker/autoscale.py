"""`taskq worker --autoscale MAX,MIN`: the worker's task slots (and its process pool, if it has
one) move between MIN and MAX with the work it holds.

Every `INTERVAL` seconds it looks at the tasks running and the messages reserved but not
started (the consumer reserves up to MAX x the prefetch multiplier, so a backlog shows here):
when they are more than the slots, the slots grow to them at once (at most MAX); when they are
fewer for `IDLE_CHECKS` looks in a row, the slots shrink to them (at least MIN), running tasks
finishing first. Each change is logged. `pool_grow`/`pool_shrink` move the same slots now, and
the bounds with them when they go past one (as Celery's autoscaler does).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from taskq.errors import ConfigurationError

if TYPE_CHECKING:
    from taskq.worker.worker import Worker

logger = logging.getLogger("taskq.worker")

INTERVAL = 2.0  # seconds between looks
IDLE_CHECKS = 3  # looks in a row with slots to spare before the slots shrink


def parse_autoscale(text: str) -> tuple[int, int]:
    """`MAX,MIN` (or `MAX`: MIN is 1) as (MAX, MIN)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 2 or not all(part.isdigit() for part in parts):
        raise ConfigurationError(f"--autoscale takes MAX,MIN (e.g. 10,3), not {text!r}")
    maximum, minimum = int(parts[0]), int(parts[1]) if len(parts) == 2 else 1
    if not 1 <= minimum <= maximum:
        raise ConfigurationError(f"--autoscale {text}: needs 1 <= MIN <= MAX")
    return maximum, minimum


class Autoscaler:
    def __init__(self, worker: Worker, maximum: int, minimum: int) -> None:
        self.worker = worker
        self.maximum = maximum
        self.minimum = minimum
        self._spare_looks = 0

    async def run(self) -> None:
        while True:
            await anyio.sleep(INTERVAL)
            self.look()

    def look(self) -> None:
        worker = self.worker
        held = worker.active_tasks + worker.prefetched
        wanted = max(self.minimum, min(self.maximum, held))
        current = worker.concurrency
        self._spare_looks = self._spare_looks + 1 if wanted < current else 0
        if wanted > current:
            logger.info("Autoscale: concurrency %d -> %d (%d tasks held)", current, wanted, held)
            worker.grow(wanted - current)
        elif self._spare_looks >= IDLE_CHECKS:
            logger.info("Autoscale: concurrency %d -> %d (%d tasks held)", current, wanted, held)
            self._spare_looks = 0
            worker.shrink(current - wanted)

    def follow(self, concurrency: int) -> None:
        """The slots changed to `concurrency` (here or by a command): bounds and pool follow."""
        self.maximum = max(self.maximum, concurrency)
        self.minimum = min(self.minimum, concurrency)
        if self.worker.processes is not None:
            self.worker.processes.resize(concurrency)
