"""One socket write for every frame queued on an AMQP connection at once.

aiormq's writer task takes the frames of its connection's write queue one at a time and
writes each, and on a loopback socket each write is a send() of its own: with 100 publishes
in flight, or a worker acking the tasks it starts, the syscalls cost more than the frames.
`coalesce_writes` gives the connection's queue a `get_nowait` that hands the writer
everything queued (up to JOINED_BYTES), as one frame: one send() a turn of the loop, and room
for the frames of many publishes in flight at once. Each frame's drain future
(`wait=True`: "written") resolves once the joined write has drained, as it did alone; a
frame that closes the connection ends the join, as the writer stops after it.
"""

from __future__ import annotations

import asyncio
import dataclasses

from aiormq.abc import AbstractConnection, ChannelFrame

# Frames (a publish with its body is one) queued before a writer blocks; aiormq's own bound,
# 10, has the 11th publish wait for the writer holding its channel's lock, and every
# publish behind it wait a turn of the loop each for that lock.
QUEUED_FRAMES = 256
# A join stops growing past this: a few large messages are not copied into one huge write.
JOINED_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class _Joined(ChannelFrame):
    """Several frames written at once; drained, it drains each of them."""

    parts: tuple[ChannelFrame, ...] = ()

    @property
    def should_drain(self) -> bool:
        return any(part.should_drain for part in self.parts)

    def drain(self) -> None:
        for part in self.parts:
            part.drain()


class _CoalescingQueue(asyncio.Queue[ChannelFrame]):
    def full(self) -> bool:
        return self.qsize() >= QUEUED_FRAMES

    def get_nowait(self) -> ChannelFrame:
        first = super().get_nowait()
        parts, size = [first], len(first.payload)
        while size < JOINED_BYTES and not parts[-1].should_close and not self.empty():
            parts.append(super().get_nowait())
            size += len(parts[-1].payload)
            self.task_done()  # the writer marks one get done; these are the others
        if len(parts) == 1:
            return first
        return _Joined(
            payload=b"".join(part.payload for part in parts),
            should_close=parts[-1].should_close,
            parts=tuple(parts),
        )


def coalesce_writes(connection: AbstractConnection) -> None:
    """From now on the connection's writer writes all that is queued at once. The queue is
    the one its writer and channels already hold (aiormq makes it with the connection), so
    it changes class rather than being replaced."""
    queue = connection.write_queue
    if type(queue) is asyncio.Queue:
        queue.__class__ = _CoalescingQueue
