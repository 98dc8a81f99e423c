"""The worker: consume, run under bounded concurrency, renew leases, shut down cleanly.

`concurrency` long-lived task loops take deliveries from one in-memory queue fed by
the broker consumer (at most `prefetch` unsettled), so running a task costs no task
spawn. A task held back by its rate limit waits outside the loops, not in a slot.

Shutdown: `stop()` (first SIGTERM/SIGINT) is warm: stop consuming, give reserved
but unstarted messages back at once, let running tasks finish within
`shutdown_timeout`, then cancel what is left. `terminate()` (a second signal) is
cold: cancel running tasks now. A cancelled `acks_late` task goes back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
from collections.abc import Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskq.brokers.base import Broker, Delivery
from taskq.control import CONTROL_CHANNEL, decode_command, encode_command
from taskq.worker.executor import Executor, Job
from taskq.worker.ratelimit import RateLimits

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.worker")

# Leases are renewed this many times per visibility timeout, so one late renewal is harmless.
RENEWALS_PER_TIMEOUT = 4
GREETING_FIRST_DELAY = 0.05
GREETING_MAX_DELAY = 5.0
FINAL_STATES_TIMEOUT = 10.0  # seconds a stopping worker gives its last task states to be written

Work = Delivery | Job  # a fresh delivery, or a job back from its rate-limit wait


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
        self._held: set[Delivery] = set()
        self._running: dict[anyio.CancelScope, Job] = {}
        self._waiting: set[anyio.CancelScope] = set()
        self._drained = anyio.Event()
        self._consume_scope = anyio.CancelScope()
        self._loops_scope = anyio.CancelScope()
        self._stopping = False
        send, receive = anyio.create_memory_object_stream[Work](max_buffer_size=math.inf)
        self._work_in: MemoryObjectSendStream[Work] = send
        self._work_out: MemoryObjectReceiveStream[Work] = receive

    def stop(self) -> None:
        """Warm shutdown: finish running tasks (within the timeout), return the rest."""
        if not self._stopping:
            logger.info("Warm shutdown: finishing %d running task(s)", len(self._running))
        self._stopping = True
        self._consume_scope.cancel()
        for waiting in list(self._waiting):
            waiting.cancel()

    def terminate(self) -> None:
        """Cold shutdown: cancel running tasks now."""
        logger.warning("Cold shutdown: cancelling %d running task(s)", len(self._running))
        self.stop()
        self._loops_scope.cancel()

    async def run(self) -> None:
        broker = await self.app.connected_broker()
        store = await self.app.connected_store()
        threads = anyio.CapacityLimiter(self.threads)
        executor = Executor(self.app, broker, store, self.hostname, threads)
        rates = RateLimits(store)
        logger.info(
            "Worker %s ready: queues %s, concurrency %d, threads %d, prefetch %d, loop %s",
            self.hostname,
            ",".join(self.queues),
            self.concurrency,
            self.threads,
            self.prefetch,
            type(asyncio.get_running_loop()).__module__.partition(".")[0],  # asyncio | uvloop
        )
        async with anyio.create_task_group() as services:
            services.start_soon(executor.states.run)
            services.start_soon(self._renew_leases)
            services.start_soon(self._obey_commands, broker, executor)
            await self.app.middleware.worker_start(self)
            try:
                await self._serve_until_stopped(broker, executor, rates, services)
            finally:  # the states written behind the loops, on every way out
                with anyio.move_on_after(FINAL_STATES_TIMEOUT, shield=True):
                    await executor.states.flush()
            services.cancel_scope.cancel()
        await self.app.middleware.worker_stop(self)
        logger.info("Worker %s stopped", self.hostname)

    async def _serve_until_stopped(
        self,
        broker: Broker,
        executor: Executor,
        rates: RateLimits,
        services: anyio.abc.TaskGroup,
    ) -> None:
        """Consume into the task loops until `stop()`, then shut them down (see the module)."""
        async with anyio.create_task_group() as loops:
            self._loops_scope = loops.cancel_scope
            for _ in range(self.concurrency):
                loops.start_soon(self._task_loop, executor, rates, services)
            self.ready.set()
            try:
                with self._consume_scope:
                    await self._consume(broker)
                self.stop()
                await self._give_back_reserved()
                with anyio.move_on_after(self.shutdown_timeout):
                    await self._drained.wait()
            finally:
                await self._give_back_reserved()
            if self._running:
                self.terminate()
            loops.cancel_scope.cancel()

    async def _consume(self, broker: Broker) -> None:
        async with aclosing(broker.consume(self.queues, self.prefetch)) as deliveries:
            async for delivery in deliveries:
                self._held.add(delivery)
                self._work_in.send_nowait(delivery)

    async def _give_back_reserved(self) -> None:
        """On shutdown: nack what no loop has started, then let the loops end when idle."""
        self._work_in.close()
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    work = self._work_out.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                await self._give_back(work)
        self._check_drained()

    async def _task_loop(
        self, executor: Executor, rates: RateLimits, waiters: anyio.abc.TaskGroup
    ) -> None:
        """One slot: take work, run it, repeat until the queue is closed and empty.

        Jobs run in a cancel scope that a revoke with `terminate` cancels. One scope serves
        job after job until that happens: a scope per job cost as much as its ack.
        """
        serving = True
        while serving:
            with anyio.CancelScope() as scope:
                serving = await self._serve(scope, executor, rates, waiters)

    async def _serve(
        self,
        scope: anyio.CancelScope,
        executor: Executor,
        rates: RateLimits,
        waiters: anyio.abc.TaskGroup,
    ) -> bool:
        """Run work in `scope`; True once a job in it was terminated, False at the end."""
        while (work := await self._next_work()) is not None:
            if self._stopping:
                await self._give_back(work)
                continue
            held = False
            try:
                job = work if isinstance(work, Job) else await executor.receive(work)
                if job is not None and job is not work and job.task.rate_limit:
                    waiters.start_soon(self._wait_for_rate, executor, rates, job)
                    held = True  # the waiter brings it back, or gives it back
                elif job is not None:
                    await self._run(scope, executor, job)
            except Exception as exc:
                logger.exception("Worker %s could not handle a delivery", self.hostname)
                await executor.unhandled(work.delivery if isinstance(work, Job) else work, exc)
            finally:
                if not held:
                    self._release(work)
            if scope.cancel_called:  # the job ended before the cancellation reached it
                return True
        return False

    async def _next_work(self) -> Work | None:
        """The next work, None once the queue is closed and empty. Work already queued is
        taken without a checkpoint: every job yields while it is settled anyway."""
        try:
            return self._work_out.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            return None
        try:
            return await self._work_out.receive()
        except anyio.EndOfStream:
            return None

    async def _wait_for_rate(self, executor: Executor, rates: RateLimits, job: Job) -> None:
        """Hold a rate-limited job (RECEIVED, not in a slot) until it may start."""
        rate = job.task.rate_limit
        assert rate is not None
        with anyio.CancelScope() as waiting:
            self._waiting.add(waiting)
            if self._stopping:
                waiting.cancel()
            try:
                await executor.mark_received(job)
                await rates.wait(job.task.name, rate, job.task.rate_limit_scope)
                self._work_in.send_nowait(job)
                return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # shutting down
            finally:
                self._waiting.discard(waiting)
        await self._give_back(job)

    async def _run(self, scope: anyio.CancelScope, executor: Executor, job: Job) -> None:
        self._running[scope] = job
        try:
            await executor.run(job)
        finally:
            del self._running[scope]

    async def _give_back(self, work: Work) -> None:
        delivery = work.delivery if isinstance(work, Job) else work
        with anyio.CancelScope(shield=True):
            await delivery.nack(requeue=True)
        self._release(work)

    def _release(self, work: Work) -> None:
        self._held.discard(work.delivery if isinstance(work, Job) else work)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._held:
            self._drained.set()

    async def _obey_commands(self, broker: Broker, executor: Executor) -> None:
        """Control-plane commands: `revoke` (and with `terminate`, cancel them here).

        The worker greets itself on the channel: hearing its greeting proves that broadcasts
        reach it, so it loads the stored revocations then, and needs no store lookups after.
        """
        greeting = encode_command("hello", worker=self.hostname, token=secrets.token_hex(8))
        heard = anyio.Event()
        async with anyio.create_task_group() as greeter:
            greeter.start_soon(_greet, broker, greeting, heard)
            async for payload in broker.subscribe(CONTROL_CHANNEL):
                if payload == greeting:
                    if not heard.is_set():
                        heard.set()
                        await _load_revocations(executor)
                    continue
                self._obey(decode_command(payload), executor)

    def _obey(self, command: dict[str, Any] | None, executor: Executor) -> None:
        if command is None or command["op"] != "revoke":
            return
        revoked = [task_id for task_id in command.get("ids") or () if isinstance(task_id, str)]
        executor.revoked.add(revoked)
        if command.get("terminate"):
            self._terminate(set(revoked))

    def _terminate(self, task_ids: set[str]) -> None:
        for scope, job in list(self._running.items()):
            if job.message.id in task_ids:
                logger.warning("Task %s[%s] revoked: terminating", job.message.task, job.message.id)
                job.terminated = True
                scope.cancel()

    async def _renew_leases(self) -> None:
        visibility = self.app.broker_options().visibility_timeout
        while True:
            await anyio.sleep(visibility / RENEWALS_PER_TIMEOUT)
            async with anyio.create_task_group() as renewals:  # concurrently: one wait in all
                for delivery in list(self._held):
                    renewals.start_soon(delivery.extend, visibility)


async def _greet(broker: Broker, greeting: bytes, heard: anyio.Event) -> None:
    """Broadcast `greeting` until it is heard: the first may precede the subscription."""
    delay = GREETING_FIRST_DELAY
    while not heard.is_set():
        try:
            await broker.broadcast(CONTROL_CHANNEL, greeting)
        except Exception as exc:  # the broker is down: messages are checked in the store meanwhile
            logger.warning("Could not broadcast on the control channel: %s", exc)
        with anyio.move_on_after(delay):
            await heard.wait()
        delay = min(delay * 2, GREETING_MAX_DELAY)


async def _load_revocations(executor: Executor) -> None:
    try:
        await executor.load_revocations()
    except Exception:  # messages are still checked in the store, one batch at a time
        logger.exception("Could not load the stored revocations")
