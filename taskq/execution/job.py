"""What the pipeline passes along: the job, its outcome, and the services it runs against."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from taskq.batching import Batch
from taskq.brokers.base import Delivery
from taskq.chords import ChordCounter
from taskq.message import Message
from taskq.stores.base import ResultStore, TaskMeta

if TYPE_CHECKING:
    import anyio

    from taskq.app import TaskQ
    from taskq.execution.processpool import ProcessPool
    from taskq.task import Request, Task


@dataclass(slots=True)
class Job:
    """One delivery of a task message, on its way through the pipeline."""

    delivery: Delivery
    message: Message
    task: Task[Any, Any]
    request: Request
    started: bool = False  # the run began (settlement acked it early, or was about to)
    terminated: bool = False  # revoked with terminate=True while running
    run_at: float = 0.0  # perf_counter() when the function was called
    acks_late: bool = field(init=False)
    stores_result: bool = field(init=False)
    stores_started: bool = field(init=False)

    def __post_init__(self) -> None:
        self.acks_late = self._flag("acks_late")
        ignored = self.message.ignore_result  # the call's, else the task's, else the app's
        self.stores_result = not (self._flag("ignore_result") if ignored is None else ignored)
        self.stores_started = self.stores_result and self._flag("track_started")

    @property
    def requeued_when_lost(self) -> bool:
        """An `acks_late` task cut short by a cold shutdown goes back to the queue."""
        return self.acks_late and self._flag("reject_on_worker_lost")

    def _flag(self, name: str) -> bool:
        """The task's own option `name`, or the app's `task_<name>` when the task has none."""
        value = getattr(self.task, name)
        return bool(value if value is not None else getattr(self.task.app.conf, f"task_{name}"))


# A state's write under way: `done` once it is stored, `wait()` raising if it failed.
Written = Batch[TaskMeta, None]


@dataclass(slots=True)
class Outcome:
    """What running a job came to. `status` is a task state (SUCCESS, FAILURE, RETRY,
    REVOKED), GIVEN_BACK or REPLACED; `meta` is what was (or, without a stored result, would have
    been) recorded; `written` its write if still under way; `retry` the message to publish for
    a RETRY."""

    status: str
    value: Any = None
    error: BaseException | None = None
    meta: TaskMeta | None = None
    written: Written | None = None
    retry: Message | None = None
    elapsed: float = 0.0


CallNext = Callable[[Job], Coroutine[Any, Any, Outcome]]

GIVEN_BACK = "GIVEN_BACK"  # an outcome, not a task state: the job went back to its queue unrun
REPLACED = "REPLACED"  # an outcome, not a task state: what replaced the task records its id


class States(Protocol):
    """How a runtime writes task states (the worker batches them; eager runs write at once)."""

    def put(self, meta: TaskMeta) -> None:
        """Queue a state without waiting for it (STARTED)."""
        ...

    async def write(self, meta: TaskMeta) -> None:
        """Store a state; return once it is stored."""
        ...

    async def record(self, meta: TaskMeta, *, wait: bool, acked: bool) -> Written | None:
        """Store a final state, waiting for it only when `wait` (or when writes lag).
        `acked`: the delivery's ack waits for this state (`acks_late`); the write still under
        way is returned for the ack to wait for it off the task's slot where that keeps a lost
        node from taking every slot (a store that spreads its writes over domains), else it
        is waited for here, which costs less."""
        ...


class Runtime(Protocol):
    """The services the pipeline runs against: a worker's, or an eager run's."""

    @property
    def app(self) -> TaskQ: ...

    @property
    def hostname(self) -> str: ...

    @property
    def store(self) -> ResultStore: ...

    @property
    def states(self) -> States: ...

    @property
    def threads(self) -> anyio.CapacityLimiter | None:
        """The limiter of plain functions' threads; None: anyio's default."""
        ...

    @property
    def processes(self) -> ProcessPool | None:
        """The process pool of `pool="process"` tasks; None: they run in threads."""
        ...

    @property
    def chord_counter(self) -> ChordCounter | None:
        """The broker, when it counts chords itself (see `taskq.workflow`)."""
        ...

    async def publish(self, message: Message, queue: str) -> None:
        """Publish `message` (a retry) to `queue`."""
        ...

    async def send_messages(self, messages: Sequence[Message]) -> None:
        """Publish the messages a workflow step starts, in one batch."""
        ...

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        """Keep a copy of an acked message as a dead letter."""
        ...

    def revoked_now(self, task_id: str) -> bool | None:
        """Whether the task is revoked, if that is known here without asking the store."""
        ...

    async def is_revoked(self, task_id: str) -> bool:
        """Whether the task is revoked, asking the store if need be."""
        ...

    def report_revoked(self, job: Job, reason: str) -> None:
        """A job is being settled as REVOKED (`reason`: expired or revoked; terminated if
        `job.terminated`): a worker's task events send `task-revoked`."""
        ...

    async def ack_after_run(self, delivery: Delivery, written: Written | None) -> None:
        """Ack the delivery of a job that ran, once `written` (its state, if still under way)
        is stored. A worker may return at once, the ack still to go: where the store or the
        broker spreads over nodes that may be lost one at a time, so the job's slot goes on
        to the next job while a lost node holds up its write or its ack."""
        ...

    async def wait_off_slot(self, wait: Callable[[], Awaitable[object]]) -> bool:
        """Await `wait()` with the job's concurrency slot lent to other work meanwhile (a rate
        limit's wait); False if the worker stopped first: the job is to be given back."""
        ...
