"""Coalesced writes on an AMQP connection: what is queued at once leaves in one write, each
frame's drain future resolves when that write has drained, and a closing frame ends it."""

import asyncio
from typing import Any

from aiormq.abc import ChannelFrame

from taskq.brokers.amqp_writes import JOINED_BYTES, QUEUED_FRAMES, coalesce_writes


class _Connection:
    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=10)


def _frame(payload: bytes, *, close: bool = False, drained: bool = False) -> ChannelFrame:
    future = asyncio.get_running_loop().create_future() if drained else None
    return ChannelFrame(payload=payload, should_close=close, drain_future=future)


def _coalescing() -> asyncio.Queue[ChannelFrame]:
    connection = _Connection()
    coalesce_writes(connection)  # type: ignore[arg-type]
    return connection.write_queue


async def test_what_is_queued_leaves_in_one_write_that_drains_each_frame() -> None:
    queue = _coalescing()
    frames = [_frame(b"a", drained=True), _frame(b"b"), _frame(b"c", drained=True)]
    for frame in frames:
        queue.put_nowait(frame)
    joined = await queue.get()
    queue.task_done()
    assert joined.payload == b"abc" and not joined.should_close and joined.should_drain
    assert queue.empty()
    joined.drain()
    futures: list[asyncio.Future[Any]] = [f.drain_future for f in frames if f.drain_future]
    assert all(future.done() for future in futures)
    assert not joined.should_drain
    await queue.join()  # every frame counted done


async def test_a_lone_frame_is_written_as_it_is() -> None:
    queue = _coalescing()
    frame = _frame(b"a")
    queue.put_nowait(frame)
    assert queue.get_nowait() is frame


async def test_a_closing_frame_ends_the_write_and_later_frames_wait() -> None:
    queue = _coalescing()
    for frame in (_frame(b"a"), _frame(b"close", close=True), _frame(b"late")):
        queue.put_nowait(frame)
    joined = queue.get_nowait()
    assert joined.payload == b"aclose" and joined.should_close
    assert queue.get_nowait().payload == b"late"


async def test_a_join_stops_growing_past_its_size() -> None:
    queue = _coalescing()
    big = b"x" * (JOINED_BYTES // 2)
    for _ in range(3):
        queue.put_nowait(_frame(big))
    assert queue.get_nowait().payload == big * 2
    assert queue.get_nowait().payload == big


async def test_putters_blocked_on_a_full_queue_are_woken_as_it_empties() -> None:
    queue = _coalescing()
    for _ in range(QUEUED_FRAMES):
        queue.put_nowait(_frame(b"."))
    late = asyncio.ensure_future(queue.put(_frame(b"!")))
    await asyncio.sleep(0)
    assert not late.done()
    assert len(queue.get_nowait().payload) == QUEUED_FRAMES
    await asyncio.wait_for(late, 1)
    assert queue.get_nowait().payload == b"!"
