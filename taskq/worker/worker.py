"""The worker: consume, run under bounded concurrency, renew leases, shut down cleanly.

`concurrency` long-lived task loops take deliveries from one in-memory queue fed by
the broker consumer (at most `prefetch` unsettled), so running a task costs no task
spawn. A loop turns its delivery into a job (`WorkerRuntime.receive`) and runs it through
the pipeline (`taskq.execution`). A job held back by its rate limit lends its slot: a new
loop takes its place while it waits, and one loop retires when it comes back. An `acks_late`
job's ack waits for its state to be stored, without its slot where the store spreads its
writes over domains (`taskq.worker.deferredacks`).

The control plane (`taskq.worker.remote`) may change the queues, which starts consuming again
(what is held from the consumer before is settled as ever), and the number of task loops.

Shutdown: `stop()` (first SIGTERM/SIGINT) is warm: stop consuming, give reserved
but unstarted messages back at once, let running tasks finish within
`shutdown_timeout`, then cancel what is left. `terminate()` (a second signal) is
cold: cancel running tasks now. A cancelled `acks_late` task goes back to the queue.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskq import daemon
from taskq.brokers.base import Broker, Delivery
from taskq.defaults import POOLS, PROCESS_POOL
from taskq.errors import ConfigurationError
from taskq.execution.job import Job
from taskq.execution.settlement import settle_lost
from taskq.serializers import PICKLE_RISK
from taskq.urls import masked_url
from taskq.worker.autoscale import Autoscaler
from taskq.worker.deferredacks import DeferredAcks
from taskq.worker.ops import Operations
from taskq.worker.remote import RemoteControl
from taskq.worker.runtime import WorkerRuntime, event_loop_name

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.execution.processpool import ProcessPool
    from taskq.worker.recycling import Recycling

logger = logging.getLogger("taskq.worker")

# Leases are renewed this many times per visibility timeout, so one late renewal is harmless.
RENEWALS_PER_TIMEOUT = 4
FINAL_STATES_TIMEOUT = 10.0  # seconds a stopping worker gives its last task states to be written
# Where a plain function runs (`worker_pool`, a task's `pool`); the process pool's module, which
# imports multiprocessing and pickle, is loaded only for a worker with a task that runs there.


def default_hostname() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


class _Retire:
    """Taken from the work queue by the loop that gives its slot back to a job that lent it."""

    def __init__(self) -> None:
        self.done = anyio.Event()


Work = Delivery | _Retire


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
        metrics_port: int | None = None,
        send_events: bool | None = None,
        pool: str | None = None,
        pool_processes: int | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        app_spec: str | None = None,
        supervised: bool = False,
        autoscale: tuple[int, int] | None = None,
    ) -> None:
        conf = app.conf
        conf.validate()  # before the metrics port is bound from it
        self.app = app
        self.queues = list(queues or conf.default_queues())
        if autoscale is not None and (concurrency or pool_processes):
            raise ConfigurationError(
                "--autoscale MAX,MIN sets the concurrency and the process pool's size:"
                " not with -c/--concurrency or --pool-processes"
            )
        self.autoscaler = Autoscaler(self, *autoscale) if autoscale else None
        self.concurrency = autoscale[1] if autoscale else concurrency or conf.worker_concurrency
        self.threads = threads or conf.worker_threads
        most = autoscale[0] if autoscale else self.concurrency
        self.prefetch = most * (prefetch_multiplier or conf.worker_prefetch_multiplier)
        self.shutdown_timeout = (
            conf.worker_shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        )
        self.hostname = hostname or default_hostname()
        self.ready = anyio.Event()
        self._held: set[Delivery] = set()
        self._running: dict[anyio.CancelScope, Job] = {}
        self._waiting: set[anyio.CancelScope] = set()  # jobs waiting with their slot lent
        self._acks = DeferredAcks(self._release, self._unhandled)
        self._drained = anyio.Event()
        self._consume_scope = anyio.CancelScope()
        self._restart_consumer = anyio.CancelScope()
        self._loops: anyio.abc.TaskGroup | None = None
        self._runtime: WorkerRuntime | None = None
        self.outcomes: Counter[str] = Counter()  # how the jobs run here ended, by status
        self.started_at = time.monotonic()
        self._stopping = False
        send, receive = anyio.create_memory_object_stream[Work](max_buffer_size=math.inf)
        self._work_in: MemoryObjectSendStream[Work] = send
        self._work_out: MemoryObjectReceiveStream[Work] = receive
        self.send_events = conf.worker_send_task_events if send_events is None else send_events
        self._ops = Operations(self, metrics_port or conf.worker_metrics_port, self.send_events)
        self.pool = pool or conf.worker_pool
        if self.pool not in POOLS:
            raise ConfigurationError(f"--pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        self.pool_processes = (
            self.concurrency
            if autoscale
            else pool_processes or conf.worker_pool_processes or os.cpu_count() or 1
        )
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or conf.worker_max_memory_per_child
        self.app_spec = app_spec  # how a pool process imports the app: module:attribute
        self.processes: ProcessPool | None = None
        self.supervised = supervised  # a supervisor's child: it recycles this process too
        self.recycling: Recycling | None = None

    @property
    def active_tasks(self) -> int:
        """Tasks running now (waiting for their rate limit included)."""
        return len(self._running)

    @property
    def consuming(self) -> bool:
        """Ready and not stopping."""
        return self.ready.is_set() and not self._stopping

    @property
    def prefetched(self) -> int:
        """Messages reserved, not started yet."""
        return max(0, len(self._held) - len(self._running) - len(self._acks.deliveries))

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
        if self._loops is not None:
            self._loops.cancel_scope.cancel()

    async def run(self) -> None:
        self.app.import_task_modules()
        if not self.app.user_tasks():
            logger.warning(
                "Worker %s has no tasks registered: point -A at the module that defines them,"
                " or list their modules in the `include` setting",
                self.hostname,
            )
        broker = await self.app.connected_broker()
        store = await self.app.connected_store()
        threads = anyio.CapacityLimiter(self.threads)
        self.processes = self._process_pool()
        self.recycling = self._recycling()
        chords = await self.app.chord_counter()
        ops = self._ops
        runtime = WorkerRuntime(
            self.app,
            broker,
            store,
            chords,
            self.hostname,
            threads,
            processes=self.processes,
            metrics=ops.metrics,
            outermost=[*ops.stages, *([self.recycling] if self.recycling else [])],
            settled=ops.settled_stages,
            events=ops.events,
        )
        runtime.lend_slot = self._lend_slot
        runtime.deferred_acks = self._acks
        self._runtime = runtime
        async with anyio.create_task_group() as services:
            services.start_soon(self._ops.run, broker)
            if self.processes is not None:
                services.start_soon(self.processes.run_service)
            if self.autoscaler is not None:
                services.start_soon(self.autoscaler.run)
            self._log_ready()
            services.start_soon(runtime.states.run)
            services.start_soon(self._renew_leases, broker.options.visibility_timeout)
            services.start_soon(RemoteControl(self, broker, runtime).run)
            await self.app.middleware.worker_start(self)
            try:
                await self._serve_until_stopped(broker, runtime)
            finally:  # the states written behind the loops, on every way out
                with anyio.move_on_after(FINAL_STATES_TIMEOUT, shield=True):
                    await runtime.states.flush()
            services.cancel_scope.cancel()
        await self.app.middleware.worker_stop(self)
        logger.info("Worker %s stopped", self.hostname)

    def _process_pool(self) -> ProcessPool | None:
        """The process pool, if a task's function runs in one."""
        if self.pool != PROCESS_POOL and all(
            task.pool != PROCESS_POOL for task in self.app.tasks.values()
        ):
            return None  # no task can run in one: multiprocessing and pickle stay unimported
        from taskq.execution.processpool import PoolSettings, ProcessPool

        settings = PoolSettings(
            self.app_spec or "",
            self.hostname,
            logging.getLogger().getEffectiveLevel(),
            self.app.conf.worker_log_format,
            daemon.logfile(),
        )
        pool = ProcessPool(
            settings,
            self.pool_processes,
            self.pool,
            max_tasks=self.max_tasks_per_child,
            max_memory_kb=self.max_memory_per_child,
        )
        pooled = [name for name, task in self.app.tasks.items() if pool.takes(task)]
        if not pooled:
            return None
        if self.app_spec is None:
            raise ConfigurationError(
                f"{', '.join(pooled)} run in a process pool, whose processes import the app by"
                " its path: run `taskq worker -A module:app`, or give Worker(app_spec=...)"
            )
        return pool

    def _recycling(self) -> Recycling | None:
        """The stage that recycles this process, when a supervisor starts another."""
        limits = (self.max_tasks_per_child, self.max_memory_per_child)
        if limits == (None, None):
            return None
        if self.processes is None and not self.supervised:
            raise ConfigurationError(
                "max tasks/memory per child recycle the processes of a process pool (--pool"
                " process) or a supervisor's worker processes (--processes N): this worker has"
                " neither"
            )
        if not self.supervised:
            return None
        from taskq.worker.recycling import Recycling

        return Recycling(self, *limits)

    def _log_ready(self) -> None:
        """The ready line: what the worker consumes and how, where, and its tasks (Celery's
        banner on one line), after the warning of a worker accepting pickle."""
        app = self.app
        if "pickle" in app.conf.accept_content:
            logger.warning(PICKLE_RISK)
        logger.info(
            "Worker %s ready: queues %s, concurrency %d%s, threads %d, prefetch %d, loop %s,"
            " broker %s, results %s%s, tasks: %s",
            self.hostname,
            ",".join(self.queues),
            self.concurrency,
            (
                f" (autoscale {self.autoscaler.minimum}-{self.autoscaler.maximum})"
                if self.autoscaler
                else ""
            ),
            self.threads,
            self.prefetch,
            event_loop_name(),
            masked_url(app.broker_url),
            masked_url(app.result_backend_url),
            (f", process pool {self.pool_processes}" if self.processes else "")
            + (f", metrics on port {self._ops.port}" if self._ops.port else "")
            + (", task events" if self.send_events else ""),
            ", ".join(app.user_tasks()) or "none",
        )

    async def _serve_until_stopped(self, broker: Broker, runtime: WorkerRuntime) -> None:
        """Consume into the task loops until `stop()`, then shut them down (see the module)."""
        async with anyio.create_task_group() as loops:
            self._loops = loops
            loops.start_soon(self._acks.run)
            for _ in range(self.concurrency):
                loops.start_soon(self._task_loop, runtime)
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
        """Consume `queues`; again from the start when they change (`_restart_consumer`).
        Deliveries held from the consumer that ended are settled as ever."""
        while True:
            with anyio.CancelScope() as self._restart_consumer:
                consumer = broker.consume(list(self.queues), self.prefetch)
                async with aclosing(consumer) as deliveries:
                    async for delivery in deliveries:
                        self.take(delivery)
            if not self._restart_consumer.cancel_called:
                return

    async def _give_back_reserved(self) -> None:
        """On shutdown: nack what no loop has started, then let the loops end when idle."""
        self._work_in.close()
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    work = self._work_out.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if isinstance(work, _Retire):
                    work.done.set()
                else:
                    await self._give_back(work)
        self._check_drained()

    async def _task_loop(self, runtime: WorkerRuntime) -> None:
        """One slot: take work, run it, repeat until the queue is closed and empty, or until
        this loop retires (its slot given back to a job that lent it).

        Jobs run in a cancel scope that a revoke with `terminate` cancels. One scope serves
        job after job until that happens: a scope per job cost as much as its ack.
        """
        serving = True
        while serving:
            with anyio.CancelScope() as scope:
                serving = await self._serve(scope, runtime)

    async def _serve(self, scope: anyio.CancelScope, runtime: WorkerRuntime) -> bool:
        """Run work in `scope`; True once a job in it was terminated, False at the end."""
        while (work := await self._next_work()) is not None:
            if isinstance(work, _Retire):
                work.done.set()
                return False
            if self._stopping:
                await self._give_back(work)
                continue
            try:
                job = await runtime.receive(work)
                if job is not None:
                    await self._run(scope, runtime, job)
            except Exception as exc:
                await self._unhandled(work, exc)
            finally:
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

    async def _lend_slot(self, wait: Callable[[], Awaitable[object]]) -> bool:
        """Await `wait()` while a new loop takes the caller's slot; then take one back (a
        loop retires). False if the worker stopped meanwhile: the job is to be given back."""
        assert self._loops is not None and self._runtime is not None
        self._loops.start_soon(self._task_loop, self._runtime)
        with anyio.CancelScope() as waiting:
            self._waiting.add(waiting)
            if self._stopping:
                waiting.cancel()
            try:
                await wait()
            finally:
                self._waiting.discard(waiting)
        if waiting.cancelled_caught:
            return False  # stopping: the loop started above ends with the queue
        retire = _Retire()
        try:
            self._work_in.send_nowait(retire)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        await retire.done.wait()
        return True

    async def _run(self, scope: anyio.CancelScope, runtime: WorkerRuntime, job: Job) -> None:
        """The job through its pipeline; if that is cancelled, the job is settled as lost."""
        self._running[scope] = job
        try:
            outcome = await runtime.pipeline.chain(job.task)(job)
            self.outcomes[outcome.status] += 1
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await settle_lost(runtime, job)
            raise
        finally:
            del self._running[scope]

    async def _give_back(self, delivery: Delivery) -> None:
        with anyio.CancelScope(shield=True):
            await delivery.nack(requeue=True)
        self._release(delivery)

    async def _unhandled(self, delivery: Delivery, error: Exception) -> None:
        assert self._runtime is not None
        logger.error("Worker %s could not handle a delivery", self.hostname, exc_info=error)
        await self._runtime.unhandled(delivery, error)

    def _release(self, delivery: Delivery) -> None:
        if delivery in self._acks.deliveries:  # held until its ack (DeferredAcks)
            return
        self._held.discard(delivery)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._held:
            self._drained.set()

    # -- what the control plane reads and changes (taskq.worker.remote) ----------------

    def take(self, delivery: Delivery) -> None:
        """Hold `delivery` and queue it for the task loops (a consumer's, or a broadcast
        task's); one taken while stopping is given back by the loop that meets it."""
        self._held.add(delivery)
        self._work_in.send_nowait(delivery)

    def running_jobs(self) -> list[Job]:
        return list(self._running.values())

    def reserved_deliveries(self) -> list[Delivery]:
        """The deliveries held here that no task loop has started."""
        started = {job.delivery for job in self._running.values()} | self._acks.deliveries
        return [delivery for delivery in self._held if delivery not in started]

    def grow(self, n: int) -> None:
        """`n` more task loops; within the prefetch fixed when consuming began."""
        if self._loops is None or self._runtime is None:
            raise RuntimeError("the worker is not running tasks yet")
        if self.concurrency + n > self.prefetch:
            raise ValueError(
                f"concurrency {self.concurrency + n} would exceed the prefetch ({self.prefetch})"
                " this worker started with; restart it with a higher --prefetch-multiplier"
            )
        self.concurrency += n
        for _ in range(n):
            self._loops.start_soon(self._task_loop, self._runtime)
        if self.autoscaler is not None:
            self.autoscaler.follow(self.concurrency)

    def shrink(self, n: int) -> None:
        """`n` fewer task loops: each retires when it next takes work, after its job."""
        if n >= self.concurrency:
            raise ValueError(f"cannot shrink concurrency {self.concurrency} by {n}: at least 1")
        self.concurrency -= n
        for _ in range(n):
            self._work_in.send_nowait(_Retire())
        if self.autoscaler is not None:
            self.autoscaler.follow(self.concurrency)

    def add_consumer(self, queue: str) -> None:
        """Consume `queue` too, from now on."""
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"a queue is a name, not {queue!r}")
        if queue in self.queues:
            raise ValueError(f"already consuming {queue!r}")
        self.queues.append(queue)
        self._restart_consumer.cancel()

    def cancel_consumer(self, queue: str) -> None:
        """Stop consuming `queue`; what was prefetched from it still runs."""
        if queue not in self.queues:
            raise ValueError(f"not consuming {queue!r}: {', '.join(self.queues)}")
        if len(self.queues) == 1:
            raise ValueError(f"{queue!r} is the only queue consumed; shutdown stops the worker")
        self.queues.remove(queue)
        self._restart_consumer.cancel()

    def terminate_tasks(self, task_ids: set[str]) -> None:
        """Cancel these tasks where they run (revoked with `terminate`)."""
        for scope, job in list(self._running.items()):
            if job.message.id in task_ids:  # settle_lost logs the revocation
                job.terminated = True
                scope.cancel()

    async def _renew_leases(self, visibility: float) -> None:
        while True:
            await anyio.sleep(visibility / RENEWALS_PER_TIMEOUT)
            # A renewal still waiting for its broker node at the next round is given up (the
            # next round tries again): it must not hold back those of reachable nodes.
            with anyio.move_on_after(visibility / RENEWALS_PER_TIMEOUT):
                async with anyio.create_task_group() as renewals:  # concurrently
                    for delivery in list(self._held):
                        renewals.start_soon(delivery.extend, visibility)
