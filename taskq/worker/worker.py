"""The worker: consume, reserve, run under bounded concurrency, renew leases, shut down cleanly.

Shutdown: `stop()` (first SIGTERM/SIGINT) is warm: stop consuming, give reserved
but unstarted messages back at once, let running tasks finish within
`shutdown_timeout`, then cancel what is left. `terminate()` (a second signal) is
cold: cancel running tasks now. A cancelled `acks_late` task goes back to the queue.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio

from taskq.brokers.base import Broker, Delivery
from taskq.control import CONTROL_CHANNEL, decode_command
from taskq.worker.executor import Executor, Job
from taskq.worker.ratelimit import RateLimits

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.worker")

# Leases are renewed this many times per visibility timeout, so one late renewal is harmless.
RENEWALS_PER_TIMEOUT = 4


class Worker:
    """One event loop consuming `queues`; `await worker.run()` returns after shutdown."""

    def __init__(
        self,
        app: TaskQ,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        threads: int | None = None,
        prefetch_multiplier: int | None = None,
        shutdown_timeout: float | None = None,
        hostname: str | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.queues = list(queues or [conf.task_default_queue])
        self.concurrency = concurrency or conf.worker_concurrency
        self.threads = threads or conf.worker_threads
        self.prefetch = self.concurrency * (prefetch_multiplier or conf.worker_prefetch_multiplier)
        self.shutdown_timeout = (
            conf.worker_shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        )
        self.hostname = hostname or f"{os.getpid()}@{socket.gethostname()}"
        self.ready = anyio.Event()
        self._slots = anyio.CapacityLimiter(self.concurrency)
        self._held: set[Delivery] = set()
        self._waiting: set[anyio.CancelScope] = set()
        self._running: dict[anyio.CancelScope, Job] = {}
        self._drained = anyio.Event()
        self._consume_scope = anyio.CancelScope()
        self._stopping = False

    def stop(self) -> None:
        """Warm shutdown: finish running tasks (within the timeout), return the rest."""
        if not self._stopping:
            logger.info("Warm shutdown: finishing %d running task(s)", len(self._running))
        self._stopping = True
        self._consume_scope.cancel()
        for scope in list(self._waiting):
            scope.cancel()

    def terminate(self) -> None:
        """Cold shutdown: cancel running tasks now."""
        logger.warning("Cold shutdown: cancelling %d running task(s)", len(self._running))
        self.stop()
        for scope in list(self._running):
            scope.cancel()

    async def run(self) -> None:
        broker = await self.app.connected_broker()
        store = await self.app.connected_store()
        executor = Executor(
            self.app, broker, store, self.hostname, anyio.CapacityLimiter(self.threads)
        )
        self._rates = RateLimits(store)
        logger.info(
            "Worker %s ready: queues %s, concurrency %d, threads %d, prefetch %d",
            self.hostname,
            ",".join(self.queues),
            self.concurrency,
            self.threads,
            self.prefetch,
        )
        async with anyio.create_task_group() as services:
            services.start_soon(self._renew_leases)
            services.start_soon(self._obey_commands, broker)
            await self.app.middleware.worker_start(self)
            async with anyio.create_task_group() as handlers:
                self.ready.set()
                with self._consume_scope:
                    await self._consume(broker, executor, handlers)
                self.stop()
                if self._held:
                    with anyio.move_on_after(self.shutdown_timeout):
                        await self._drained.wait()
                    self.terminate()
            services.cancel_scope.cancel()
        await self.app.middleware.worker_stop(self)
        logger.info("Worker %s stopped", self.hostname)

    async def _consume(
        self, broker: Broker, executor: Executor, handlers: anyio.abc.TaskGroup
    ) -> None:
        async with aclosing(broker.consume(self.queues, self.prefetch)) as deliveries:
            async for delivery in deliveries:
                self._held.add(delivery)
                handlers.start_soon(self._handle, executor, delivery)

    async def _handle(self, executor: Executor, delivery: Delivery) -> None:
        try:
            job = await executor.receive(delivery)
            if job is not None and await self._wait_turn(executor, job):
                try:
                    await self._run(executor, job)
                finally:
                    self._slots.release()
        finally:
            self._held.discard(delivery)
            if self._stopping and not self._held:
                self._drained.set()

    async def _wait_turn(self, executor: Executor, job: Job) -> bool:
        """Wait for the task's rate limit, then a free slot; on shutdown give it back instead.

        RECEIVED is recorded only for a job that has to wait: one that starts at once
        goes straight to STARTED, saving a store write per task.
        """
        rate = job.task.rate_limit
        if rate is None:
            try:
                self._slots.acquire_nowait()
                return True
            except anyio.WouldBlock:
                pass
        with anyio.CancelScope() as waiting:
            self._waiting.add(waiting)
            if self._stopping:
                waiting.cancel()
            try:
                await executor.mark_received(job)
                if rate is not None:
                    await self._rates.wait(job.task.name, rate, job.task.rate_limit_scope)
                await self._slots.acquire()
                return True
            finally:
                self._waiting.discard(waiting)
        with anyio.CancelScope(shield=True):
            await job.delivery.nack(requeue=True)
        return False

    async def _run(self, executor: Executor, job: Job) -> None:
        with anyio.CancelScope() as running:
            self._running[running] = job
            try:
                await executor.run(job)
            finally:
                del self._running[running]

    async def _obey_commands(self, broker: Broker) -> None:
        """Control-plane commands: `revoke` with `terminate` cancels the tasks running here."""
        async for payload in broker.subscribe(CONTROL_CHANNEL):
            command = decode_command(payload)
            if command is None or command["op"] != "revoke" or not command.get("terminate"):
                continue
            revoked = set(command.get("ids") or ())
            for scope, job in list(self._running.items()):
                if job.message.id in revoked:
                    logger.warning(
                        "Task %s[%s] revoked: terminating", job.message.task, job.message.id
                    )
                    job.terminated = True
                    scope.cancel()

    async def _renew_leases(self) -> None:
        visibility = self.app.broker_options().visibility_timeout
        while True:
            await anyio.sleep(visibility / RENEWALS_PER_TIMEOUT)
            for delivery in list(self._held):
                await delivery.extend(visibility)
