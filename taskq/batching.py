"""Round trips shared by concurrent callers: the batching primitives of taskq.

`Batcher`: one outcome for the whole batch, flushes one at a time. Redis commands (state
writes, acks, chord counts, subscriptions), a worker's lookups of stored revocations and its
task-state writes use it. `TurnBatcher`: each caller its own outcome and cancellation, for
publishes (see its docstring). Imports nothing of taskq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Batch(Generic[T, R]):
    items: list[T] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: R | None = None
    error: Exception | None = None

    async def wait(self) -> R:
        """The flush's result once it has run; its error, raised, if it failed."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set when done without an error


class Batcher(Generic[T, R]):
    """`await submit(item)`: the items submitted while the previous flush is in flight, and in
    the event-loop turn after, go out in one `flush(items)`, whose result (or error) every
    submitter of the batch gets. Batches flush one at a time, in order.

    The first submitter of a batch runs its flush (shielded, since others wait on it). With
    `served=True` a service runs them instead, `serve()`, and `put(item)` adds an item
    without waiting for anything (a worker's task states, written behind its task loops).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[R]], *, served: bool = False) -> None:
        self._flush = flush
        self._served = served
        self._open: Batch[T, R] | None = None
        self._running: Batch[T, R] | None = None
        self._lock: anyio.Lock | None = None
        self._opened: anyio.Event | None = None
        self._posted: set[asyncio.Task[None]] = set()  # flushes run by `post`

    @property
    def idle(self) -> bool:
        """No batch open, none flushing."""
        return self._open is None and self._running is None

    def put(self, item: T) -> Batch[T, R]:
        """Add `item` to the open batch (opening one); its flush is the caller's, or the
        service's, to run."""
        batch = self._open
        if batch is None:
            batch = self._open = Batch()
            if self._opened is not None:
                self._opened.set()
        batch.items.append(item)
        return batch

    async def submit(self, item: T) -> R:
        opens = self._open is None
        batch = self.put(item)
        if opens and not self._served:
            with anyio.CancelScope(shield=True):
                await self._run(batch, join=True)
        return await batch.wait()

    def post(self, item: T) -> Batch[T, R]:
        """`submit` without waiting: a batch that `item` opens is flushed by a task of its own."""
        opens = self._open is None
        batch = self.put(item)
        if opens and not self._served:
            flush = asyncio.get_running_loop().create_task(self._run(batch, join=False))
            self._posted.add(flush)
            flush.add_done_callback(self._posted.discard)
        return batch

    async def serve(self) -> None:
        """Run batches as they open, for ever (for `served=True`)."""
        while True:
            if self._open is None:
                self._opened = anyio.Event()
                await self._opened.wait()
            batch = self._open
            assert batch is not None
            with anyio.CancelScope(shield=True):  # its submitters are waiting on it
                await self._run(batch, join=False)

    async def drain(self) -> None:
        """Return once everything added so far is flushed (or failed to be)."""
        for batch in (self._running, self._open):
            if batch is not None:
                await batch.done.wait()

    async def _run(self, batch: Batch[T, R], *, join: bool) -> None:
        """Flush `batch`; with `join`, after a turn of the loop in which the other submitters
        of this one join it (a posted or served flush runs in a later turn already)."""
        if self._lock is None:
            self._lock = anyio.Lock(fast_acquire=True)  # no loop turn when nobody holds it
        try:
            async with self._lock:
                if join:
                    await anyio.lowlevel.checkpoint()
                self._open = None
                self._running = batch
                batch.result = await self._flush(batch.items)
        except Exception as exc:
            batch.error = exc
        finally:
            self._running = None
            batch.done.set()


# Sends items in one round trip: each item's error, or None where it was taken.
Send = Callable[[list[T]], Awaitable[list[Exception | None]]]


class _Caller(Generic[T]):
    __slots__ = ("future", "items")

    def __init__(self, items: Sequence[T], future: asyncio.Future[None]) -> None:
        self.items = items
        self.future = future


class _Turn(Generic[T]):
    """The publishes of one loop turn after its first: sent together by `sender`."""

    __slots__ = ("callers", "loop", "sender")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.callers: list[_Caller[T]] = []
        self.sender: asyncio.Task[None] | None = None

    def waiting(self) -> list[_Caller[T]]:
        return [caller for caller in self.callers if not caller.future.done()]


class TurnBatcher(Generic[T]):
    """`submit(items)` sends `items` at once, or, while another caller's send is in flight,
    together with the other submits of that time, in one round trip.

    A web app publishing from many requests at once, or `asyncio.gather` of `delay()` calls,
    starts many publishes in the same turn of the loop. The first is sent at once by its
    caller, as if there were no batching (a publish one at a time pays nothing for it); those
    made while it is in flight join one batch, sent in the next loop turn by a task of its own,
    which each caller awaits through a future of its own, so that one caller's cancellation
    (`publish_timeout`) neither cancels the others nor is ignored: a cancelled caller's items
    are left out if the batch has not gone yet, and the send itself is cancelled once no caller
    waits for it. Each caller gets its own items' outcome: the first error among them, or None.
    """

    def __init__(self, send: Send[T]) -> None:
        self._send = send
        self._sending = False  # a caller is sending its own items
        self._open: _Turn[T] | None = None

    async def submit(self, items: Sequence[T]) -> None:
        loop = asyncio.get_running_loop()
        if not self._sending:
            self._sending = True
            try:
                _raise_first(await self._send(list(items)))
            finally:
                self._sending = False
            return
        turn = self._open
        if turn is None or turn.loop is not loop:
            turn = self._open = _Turn(loop)
            turn.sender = loop.create_task(self._send_turn(turn))
        future = loop.create_future()
        turn.callers.append(_Caller(items, future))
        try:
            await future
        except asyncio.CancelledError:
            if not turn.waiting() and turn.sender is not None:
                if self._open is turn:  # cancelled before it started, it will not close it
                    self._open = None
                turn.sender.cancel()
            raise

    async def _send_turn(self, turn: _Turn[T]) -> None:
        self._open = None  # this task runs in the turn after: later submits start anew
        callers = turn.waiting()
        items = [item for caller in callers for item in caller.items]
        try:
            errors = await self._send(items) if items else []
        except BaseException as exc:  # every caller's, cancellation included
            for caller in callers:
                _settle(caller, exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for caller in callers:
            end = start + len(caller.items)
            _settle(caller, next((e for e in errors[start:end] if e is not None), None))
            start = end


def _settle(caller: _Caller[T], error: BaseException | None) -> None:
    future = caller.future
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(None)


def _raise_first(errors: list[Exception | None]) -> None:
    for error in errors:
        if error is not None:
            raise error
