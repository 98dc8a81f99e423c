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
from typing import TYPE_CHECKING, Any

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


class _TaskSeries:
    """The children of one (task, queue): labels are resolved once, not per job."""

    __slots__ = ("runtime", "states", "wait")

    def __init__(self, metrics: WorkerMetrics, task: str, queue: str) -> None:
        self.states = {
            status: metrics.tasks.labels(task, queue, label)
            for status, label in STATE_LABELS.items()
        }
        self.runtime = metrics.runtime.labels(task, queue)
        self.wait = metrics.queue_wait.labels(task, queue)


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
        from prometheus_client import Counter, Gauge, Histogram

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.registry = registry
        self.tasks = Counter(
            "taskq_tasks",
            "Task runs by outcome: succeeded, failed, retried, revoked, replaced, rejected.",
            ["task", "queue", "state"],
            registry=registry,
        )
        self.runtime = Histogram(
            "taskq_task_runtime_seconds",
            "Seconds a task's function ran.",
            ["task", "queue"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "taskq_task_queue_wait_seconds",
            "Seconds from a message's sending (or its eta, if later) to its start.",
            ["task", "queue"],
            buckets=BUCKETS,
            registry=registry,
        )
        gauge("taskq_worker_active_tasks", "Tasks running now.").set_function(active)
        prefetch_doc = "Messages reserved by the worker, not started yet."
        gauge("taskq_worker_prefetched", prefetch_doc).set_function(prefetched)
        gauge("taskq_worker_concurrency", "Tasks the worker runs at once.").set(concurrency)
        self.queue_length = gauge(
            "taskq_queue_length", "Messages in the queue (waiting, reserved, delayed).", ["queue"]
        )
        self.queue_delayed = gauge(
            "taskq_queue_delayed", "Messages in the queue not due yet.", ["queue"]
        )
        self.dead_letters = gauge("taskq_dead_letters", "Dead letters of the queue.", ["queue"])
        self.broker_answers = False  # the last sample of the queues succeeded
        self._series: dict[tuple[str, str], _TaskSeries] = {}

    # -- the pipeline stage ----------------------------------------------------------

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        key = (job.task.name, job.delivery.queue)
        series = self._series.get(key) or self._series.setdefault(key, _TaskSeries(self, *key))
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
        self.tasks.labels(task or UNKNOWN_TASK, queue, REJECTED).inc()

    async def sample_queues(self, broker: Broker, queues: Sequence[str]) -> None:
        """Every few seconds: the queues' lengths, delayed messages and dead letters. A sample
        that takes longer than the interval means the broker does not answer (a client may
        keep trying to reconnect for a minute)."""
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
            self.queue_length.labels(queue).set(await broker.queue_length(queue))
            self.queue_delayed.labels(queue).set(await broker.scheduled_length(queue))
            self.dead_letters.labels(queue).set(await broker.dead_letter_length(queue))

    def _lost(self, why: str) -> None:
        if self.broker_answers:
            logger.warning("Could not sample the queues' lengths: %s", why)
        self.broker_answers = False
