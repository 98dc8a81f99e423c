"""What a worker serves to be operated, started from one place (`Operations.run`, one of the
worker's services): on `worker_metrics_port` (`--metrics-port`), /metrics in Prometheus'
text format (`taskq.worker.metrics`), and the queues' lengths sampled for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from taskq.worker.http import HttpServer, Response
from taskq.worker.metrics import WorkerMetrics, prometheus_registry

if TYPE_CHECKING:
    from taskq.brokers.base import Broker
    from taskq.worker.worker import Worker


class Operations:
    """The metrics (None without a port) and the HTTP port of `worker`: bound at once (an
    OSError saying why if it cannot be, before the worker waits for its broker), served by
    `run`."""

    def __init__(self, worker: Worker, port: int | None) -> None:
        self.port = port
        self.metrics: WorkerMetrics | None = None
        self._queues = worker.queues
        self._server: HttpServer | None = None
        if port is not None:
            self.metrics = WorkerMetrics(
                prometheus_registry(),
                concurrency=worker.concurrency,
                active=lambda: worker.active_tasks,
                prefetched=lambda: worker.prefetched,
            )
            self._server = HttpServer(port, {"/metrics": self._scrape})

    async def run(self, broker: Broker) -> None:
        """Serve until cancelled, then close the port."""
        server = self._server
        if server is None or self.metrics is None:
            return
        server.start()
        try:
            await self.metrics.sample_queues(broker, self._queues)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.stop)

    def _scrape(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        assert self.metrics is not None
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
