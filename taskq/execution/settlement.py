"""Settlement: the delivery ends as the outcome says, always.

Before the run, a task that is not `acks_late` is acked (at most once: a worker killed now
loses it; on Redis the run starts once the ack is written, before its reply: a worker killed
in that window may see the message again, see `Delivery.ack_before_run`). After the run,
once its outcome is recorded: a RETRY publishes the retry; then the delivery is acked,
unless it is settled already (acked early, or dead-lettered by the retries stage). An
`acks_late` task's ack waits for its state to be stored. Where the store spreads its writes
or the broker its queues over nodes that may be lost one at a time (Redis Cluster), the ack
does not wait on the job's concurrency slot: the worker acks it once the write is done
(`taskq.worker.deferredacks`), and a worker killed before that leaves it to be delivered
again.
`settle_lost` settles a job whose run was cut short.
"""

from __future__ import annotations

import logging
from typing import Any

from taskq.errors import WorkerLostError
from taskq.execution.guard import skip
from taskq.execution.job import CallNext, Job, Outcome, Runtime
from taskq.execution.meta import failure

logger = logging.getLogger("taskq.worker")


class Settlement:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        job.started = True
        if not job.acks_late:
            await job.delivery.ack_before_run()
        outcome = await call_next(job)
        if outcome.retry is not None:
            await self._runtime.publish(outcome.retry, job.delivery.queue)
        if not job.delivery.settled:
            await self._runtime.ack_after_run(job.delivery, outcome.written)
        return outcome


async def settle_lost(runtime: Runtime, job: Job) -> None:
    """Settle a job whose run was cancelled: terminated by a revoke (REVOKED), stopped
    before it started (given back), or cut short by a cold shutdown: given back if it is
    `acks_late` with `reject_on_worker_lost`, else recorded as lost (WorkerLostError)."""
    message = job.message
    if job.terminated:
        await skip(runtime, job, "revoked")
    elif not job.started or job.requeued_when_lost:
        if job.started:
            logger.warning("Task %s[%s] interrupted, given back", message.task, message.id)
        await job.delivery.nack(requeue=True)
    else:
        logger.warning("Task %s[%s] interrupted by a cold shutdown: lost", message.task, message.id)
        if job.stores_result:
            error = WorkerLostError("the worker shut down while the task ran")
            await runtime.states.write(failure(job, runtime.hostname, error))
        await job.delivery.ack()
