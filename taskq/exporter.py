"""`taskq exporter`: the whole cluster's metrics on one /metrics, under the worker's names
(celery-exporter's role), for a deployment that scrapes one target (`taskq[prometheus]`).

- From the task events (`app.events.receive`; the workers run with `-E`):
  `taskq_tasks_total{task,queue,state}` (succeeded, failed, retried, revoked, rejected),
  `taskq_task_runtime_seconds{task,queue}` (of the runs that succeeded or failed) and
  `taskq_task_queue_wait_seconds{task,queue}` (from `sent_at`, or `eta` when later, to
  `task-started`). A task's name and queue come from its `task-received`: one whose
  `task-received` came before the exporter started is counted under `unknown`.
- From the queues, sampled every few seconds: `taskq_queue_length`, `taskq_queue_delayed`,
  `taskq_dead_letters` `{queue}`.
- From the workers' heartbeats on the control channel: `taskq_workers_online` and
  `taskq_worker_active_tasks{worker}` (a worker's series goes when it goes offline).

The series are defined where the worker's are (`taskq.worker.metrics`), so the names, help
and buckets are the same. Replaced runs send no event: the exporter does not count them.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from taskq import events, states
from taskq.control import CONTROL_CHANNEL, decode_payload
from taskq.urls import masked_url
from taskq.worker.http import HttpServer
from taskq.worker.metrics import (
    ACTIVE,
    REJECTED,
    UNKNOWN_TASK,
    QueueDepths,
    Series,
    TaskSeries,
    prometheus_registry,
    scrape,
)
from taskq.worker.presence import EVENTS as PRESENCE_EVENTS
from taskq.worker.presence import Peers

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.brokers.base import Broker

logger = logging.getLogger("taskq.exporter")

WORKERS_ONLINE = Series("gauge", "taskq_workers_online", "Workers whose heartbeats are heard.")
UNKNOWN_QUEUE = "unknown"
PENDING_KEPT = 100_000  # tasks received and not ended that the exporter remembers, the latest
WORKERS_REFRESH = 1.0  # seconds between looks at which workers' heartbeats stopped
# The state counted for each event that ends a run.
ENDED = {
    events.SUCCEEDED: states.SUCCESS,
    events.FAILED: states.FAILURE,
    events.RETRIED: states.RETRY,
    events.REVOKED: states.REVOKED,
}


class Exporter:
    """Binds `port` when made (an OSError saying why if it cannot); `run` serves until
    cancelled."""

    def __init__(self, app: TaskQ, port: int, queues: Sequence[str]) -> None:
        self._app = app
        self._queues = list(queues)
        self.registry = prometheus_registry()
        self.series = TaskSeries(self.registry)
        self.depths = QueueDepths(self.registry)
        self._online = WORKERS_ONLINE.define(self.registry)
        self._active = ACTIVE.define(self.registry, "worker")
        self._peers = Peers()
        self._shown: set[str] = set()  # the workers with an active-tasks series
        # task id -> (task, queue, the time its queue wait counts from), from task-received
        self._pending: collections.OrderedDict[str, tuple[str, str, float]] = (
            collections.OrderedDict()
        )
        self._server = HttpServer(port, {"/metrics": partial(scrape, self.registry)})
        self.port = self._server.port

    async def run(self) -> None:
        broker = await self._app.connected_broker()
        self._server.start()
        try:
            async with anyio.create_task_group() as services:
                services.start_soon(self.depths.sample, broker, self._queues)
                services.start_soon(self._hear_workers, broker)
                services.start_soon(self._refresh_workers)
                listening = anyio.Event()
                services.start_soon(self._count_events, listening)
                await listening.wait()
                logger.info(
                    "Exporter ready: /metrics on port %d, broker %s, queues %s",
                    self.port,
                    masked_url(self._app.broker_url),
                    ",".join(self._queues),
                )
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._server.stop)

    def count(self, event: dict[str, Any]) -> None:
        """Take in one task event."""
        kind, task_id = event.get("type"), str(event.get("uuid"))
        if kind == events.RECEIVED:
            waits_from = max(_number(event.get("sent_at")), _number(event.get("eta")))
            task, queue = event.get("name"), event.get("queue")
            self._pending[task_id] = (
                _label(task, UNKNOWN_TASK),
                _label(queue, UNKNOWN_QUEUE),
                waits_from,
            )
            if len(self._pending) > PENDING_KEPT:
                self._pending.popitem(last=False)
        elif kind == events.STARTED:
            pending = self._pending.get(task_id)
            if pending is not None and pending[2]:
                wait = max(0.0, _number(event.get("timestamp")) - pending[2])
                self.series.of(pending[0], pending[1]).wait.observe(wait)
        elif kind in ENDED:
            task, queue, _ = self._pending.pop(task_id, (UNKNOWN_TASK, UNKNOWN_QUEUE, 0.0))
            children = self.series.of(task, queue)
            children.states[ENDED[kind]].inc()
            runtime = event.get("runtime")
            if isinstance(runtime, int | float) and kind in (events.SUCCEEDED, events.FAILED):
                children.runtime.observe(runtime)
        elif kind == events.REJECTED:
            queue = _label(event.get("queue"), UNKNOWN_QUEUE)
            self.series.tasks.labels(UNKNOWN_TASK, queue, REJECTED).inc()

    async def _count_events(self, listening: anyio.Event) -> None:
        async for event in self._app.events.receive(ready=listening):
            self.count(event)

    async def _hear_workers(self, broker: Broker) -> None:
        async for payload in broker.subscribe(CONTROL_CHANNEL):
            message = decode_payload(payload)
            if message is not None and message.get("op") in PRESENCE_EVENTS:
                self._peers.hear(message)
                self._show_workers()

    async def _refresh_workers(self) -> None:
        """A worker whose heartbeats stopped goes offline without a word: look every second."""
        while True:
            self._show_workers()
            await anyio.sleep(WORKERS_REFRESH)

    def _show_workers(self) -> None:
        online = {name: peer for name, peer in self._peers.peers().items() if peer["online"]}
        self._online.set(len(online))
        for name in self._shown - online.keys():
            self._active.remove(name)
        for name, peer in online.items():
            self._active.labels(name).set(peer["active"])
        self._shown = set(online)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _label(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default
