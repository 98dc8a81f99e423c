"""What a worker serves to be operated, started from one place (`Operations.run`, one of the
worker's services): the loop watch (`taskq.worker.loopwatch`: a task that blocks the event
loop is logged), and on `worker_metrics_port` (`--metrics-port`) an HTTP port with /metrics in
Prometheus' text format (`taskq.worker.metrics`, the queues sampled for it), /healthz and
/readyz; with `worker_send_task_events` (`-E`), the task events (`taskq.events`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from taskq.events import EventSender, TaskEvents
from taskq.execution.logcontext import LogContext
from taskq.worker.loopwatch import LoopWatch

if TYPE_CHECKING:
    from taskq.brokers.base import Broker
    from taskq.execution.pipeline import Stage
    from taskq.worker.http import HttpServer, Response
    from taskq.worker.metrics import WorkerMetrics
    from taskq.worker.worker import Worker

LIVENESS_BOUND = 1.0  # seconds the event loop may be overdue before /healthz fails


class Operations:
    """The loop watch, the metrics (None without a port) and the HTTP port of `worker`: the
    port is bound and served at once (an OSError saying why if it cannot be), so that while
    the worker waits for its broker it is alive and not ready; `run` closes it at the end."""

    def __init__(self, worker: Worker, port: int | None, send_events: bool = False) -> None:
        self.port = port
        self.watch = LoopWatch(
            worker.app.conf.worker_blocking_warning, busy=lambda: worker.active_tasks > 0
        )
        self.metrics: WorkerMetrics | None = None
        self._worker = worker
        self._server: HttpServer | None = None
        if port is not None:
            # Only for the port: http.server is a MB of RSS.
            from taskq.worker.http import HttpServer
            from taskq.worker.metrics import WorkerMetrics, prometheus_registry

            self.metrics = WorkerMetrics(
                prometheus_registry(),
                concurrency=worker.concurrency,
                active=lambda: worker.active_tasks,
                prefetched=lambda: worker.prefetched,
            )
            routes = {"/metrics": self._scrape, "/healthz": self._healthz, "/readyz": self._readyz}
            self._server = HttpServer(port, routes)
            self._server.start()  # probes answer while the worker waits for its broker
        # The worker's outermost pipeline stages: the log context outside the metrics, so
        # that whatever the metrics log is about its job; the loop watch, woken by each job.
        self.stages: list[Stage] = (
            [LogContext()] if worker.app.conf.worker_log_format == "json" else []
        )
        self.stages.append(self.watch)
        if self.metrics is not None:
            self.stages.append(self.metrics)
        # Task events (`-E`): the run's started and outcome events inside the settlement
        # (before a retry is published); the intake and the REVOKED settlement send the rest.
        self.events: EventSender | None = None
        self.settled_stages: list[Stage] = []
        if send_events:
            self.events = EventSender(worker.hostname)
            self.settled_stages.append(TaskEvents(self.events))

    async def run(self, broker: Broker) -> None:
        """Watch the loop, send the task events and sample the queues until cancelled, then
        close the port."""
        async with anyio.create_task_group() as services:
            if self.events is not None:
                services.start_soon(self.events.run, broker)
            services.start_soon(self.watch.run)
            if self._server is None or self.metrics is None:
                return
            try:
                await self.metrics.queues.sample(broker, self._worker.queues)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._server.stop)

    def _scrape(self) -> Response:
        from taskq.worker.metrics import scrape

        assert self.metrics is not None
        return scrape(self.metrics.registry)

    def _healthz(self) -> Response:
        """Alive while the event loop answers within `LIVENESS_BOUND`."""
        if not self.watch.answers_within(LIVENESS_BOUND):
            blocked = max(self.watch.blocked_for(), LIVENESS_BOUND)
            return _text(503, f"event loop blocked for {blocked:.1f} s")
        return _text(200, "ok")

    def _readyz(self) -> Response:
        """Ready while consuming, the broker answering the last sample of the queues."""
        assert self.metrics is not None
        if not self._worker.consuming:
            return _text(503, "not consuming")
        if not self.metrics.queues.broker_answers:
            return _text(503, "the broker did not answer")
        return _text(200, "ok")


def _text(status: int, text: str) -> Response:
    return status, "text/plain; charset=utf-8", f"{text}\n".encode()
