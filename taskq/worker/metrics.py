"""A worker's Prometheus metrics (`taskq[prometheus]`), served on /metrics (`taskq.worker.ops`).

`WorkerMetrics` is a stage of the pipeline, outermost (before the guard, so a revoked job is
counted too): it counts each job's outcome and observes its queue wait and its runtime. The
worker's own gauges (active, prefetched) are read at scrape time, costing a task nothing;
the queues' lengths are sampled every `QUEUE_SAMPLE_INTERVAL` seconds. Labels are task names
and queue names, never ids: a message naming a task the worker does not know is counted
under `UNKNOWN_TASK`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from taskq import states
from taskq.errors import ConfigurationError
from taskq.execution.job import REPLACED, CallNext, Job, Outcome

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from taskq.brokers.base import Broker

logger = logging.getLogger("taskq.worker")

QUEUE_SAMPLE_INTERVAL = 5.0
UNKNOWN_TASK = "unknown"
# The state label of each outcome counted (GIVEN_BACK, a job put back unrun, is not).
STATE_LABELS = {
    states.SUCCESS: "succeeded",
    states.FAILURE: "failed",
    states.RETRY: "retried",
    states.REVOKED: "revoked",
    REPLACED: "replaced",
}
REJECTED = "rejected"  # a message dead-lettered unrun: malformed, unknown task, bad arguments
# Seconds, for runtimes and queue waits alike: a task queue sees both milliseconds and hours.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


def prometheus_registry() -> CollectorRegistry:
    """A registry of its own (so workers in one process do not share series), or a one-line
    error naming the extra to install."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise ConfigurationError(
            "metrics need prometheus-client: pip install 'taskq[prometheus]'"
        ) from None
    return CollectorRegistry(auto_describe=True)


def scrape(registry: CollectorRegistry) -> tuple[int, str, bytes]:
    """A GET /metrics answer: the registry in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return 200, CONTENT_TYPE_LATEST, generate_latest(registry)


@dataclass(frozen=True, slots=True)
class Series:
    """A metric's definition, the one place of its name, help, labels and buckets: a worker
    and the exporter (`taskq.exporter`, which adds a `worker` label to a worker's gauges)
    define the same series from it."""

    kind: Literal["counter", "gauge", "histogram"]
    name: str
    doc: str
    labels: tuple[str, ...] = ()

    def define(self, registry: CollectorRegistry, *more_labels: str) -> Any:
        from prometheus_client import Counter, Gauge, Histogram

        labels = [*more_labels, *self.labels]
        if self.kind == "histogram":
            return Histogram(self.name, self.doc, labels, buckets=BUCKETS, registry=registry)
        kind = Counter if self.kind == "counter" else Gauge
        return kind(self.name, self.doc, labels, registry=registry)


TASKS = Series(
    "counter",
    "taskq_tasks",
    "Task runs by outcome: succeeded, failed, retried, revoked, replaced, rejected.",
    ("task", "queue", "state"),
)
RUNTIME = Series(
    "histogram", "taskq_task_runtime_seconds", "Seconds a task's function ran.", ("task", "queue")
)
QUEUE_WAIT = Series(
    "histogram",
    "taskq_task_queue_wait_seconds",
    "Seconds from a message's sending (or its eta, if later) to its start.",
    ("task", "queue"),
)
ACTIVE = Series("gauge", "taskq_worker_active_tasks", "Tasks running now.")
PREFETCHED = Series(
    "gauge", "taskq_worker_prefetched", "Messages reserved by the worker, not started yet."
)
CONCURRENCY = Series("gauge", "taskq_worker_concurrency", "Tasks the worker runs at once.")
QUEUE_LENGTH = Series(
    "gauge", "taskq_queue_length", "Messages in the queue (waiting, reserved, delayed).", ("queue",)
)
QUEUE_DELAYED = Series(
    "gauge", "taskq_queue_delayed", "Messages in the queue not due yet.", ("queue",)
)
DEAD_LETTERS = Series("gauge", "taskq_dead_letters", "Dead letters of the queue.", ("queue",))


class TaskSeries:
    """The series of a task run's outcome: counted by state, the runtime and the queue wait
    observed, with the children of one (task, queue) resolved once, not per job."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = TASKS.define(registry)
        self.runtime = RUNTIME.define(registry)
        self.queue_wait = QUEUE_WAIT.define(registry)
        self._children: dict[tuple[str, str], _TaskChildren] = {}

    def of(self, task: str, queue: str) -> _TaskChildren:
        key = (task, queue)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _TaskChildren(self, task, queue)
        return children


class _TaskChildren:
    __slots__ = ("runtime", "states", "wait")

    def __init__(self, series: TaskSeries, task: str, queue: str) -> None:
        self.states = {
            status: series.tasks.labels(task, queue, label)
            for status, label in STATE_LABELS.items()
        }
        self.runtime = series.runtime.labels(task, queue)
        self.wait = series.queue_wait.labels(task, queue)


class QueueDepths:
    """The queues' lengths, delayed messages and dead letters, sampled every
    `QUEUE_SAMPLE_INTERVAL` seconds (`sample`); `broker_answers` whether the last sample
    succeeded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.length = QUEUE_LENGTH.define(registry)
        self.delayed = QUEUE_DELAYED.define(registry)
        self.dead_letters = DEAD_LETTERS.define(registry)
        self.broker_answers = False

    async def sample(self, broker: Broker, queues: Sequence[str]) -> None:
        """Every few seconds, until cancelled. A sample that takes longer than the interval
        means the broker does not answer (a client may keep trying to reconnect for a
        minute)."""
        while True:
            try:
                with anyio.fail_after(QUEUE_SAMPLE_INTERVAL):
                    await self._sample(broker, queues)
                self.broker_answers = True
            except TimeoutError:
                self._lost(f"the broker did not answer within {QUEUE_SAMPLE_INTERVAL:g} s")
            except Exception as exc:  # the broker is down: the next sample tries again
                self._lost(str(exc))
            await anyio.sleep(QUEUE_SAMPLE_INTERVAL)

    async def _sample(self, broker: Broker, queues: Sequence[str]) -> None:
        for queue in queues:
            self.length.labels(queue).set(await broker.queue_length(queue))
            self.delayed.labels(queue).set(await broker.scheduled_length(queue))
            self.dead_letters.labels(queue).set(await broker.dead_letter_length(queue))

    def _lost(self, why: str) -> None:
        if self.broker_answers:
            logger.warning("Could not sample the queues' lengths: %s", why)
        self.broker_answers = False


class WorkerMetrics:
    """The series of one worker. `active` and `prefetched` are read when scraped."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        concurrency: int,
        active: Callable[[], int],
        prefetched: Callable[[], int],
    ) -> None:
        self.registry = registry
        self.series = TaskSeries(registry)
        ACTIVE.define(registry).set_function(active)
        PREFETCHED.define(registry).set_function(prefetched)
        CONCURRENCY.define(registry).set(concurrency)
        self.queues = QueueDepths(registry)

    # -- the pipeline stage ----------------------------------------------------------

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        series = self.series.of(job.task.name, job.delivery.queue)
        message = job.message
        series.wait.observe(max(0.0, time.time() - max(message.sent_at, message.eta or 0.0)))
        outcome = await call_next(job)
        counter = series.states.get(outcome.status)
        if counter is not None:
            counter.inc()
        if job.run_at:
            series.runtime.observe(outcome.elapsed)
        return outcome

    # -- outside the pipeline --------------------------------------------------------

    def rejected(self, task: str | None, queue: str) -> None:
        """A message dead-lettered before it became a job (`task`: its name, if registered)."""
        self.series.tasks.labels(task or UNKNOWN_TASK, queue, REJECTED).inc()
