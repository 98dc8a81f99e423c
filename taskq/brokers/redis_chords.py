"""Chords counted by the Redis broker itself (`taskq.chords.ChordCounter`), chosen when the
result store is the same Redis (same server, database and prefix): a finished member's
result and, with the last member, the callback's publish are one call of the "chord" script
(`redis.lua`), under the hash tag of the callback's queue, where the members added to the
chord (`Task.add_to_chord`) are recorded too. The members finishing in one
event-loop turn share that call; the results are kept with the chord (`CHORD_RETENTION`
after its latest member), whatever `result_expires` is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from taskq.batching import Batcher
from taskq.brokers.redis import SCRIPTS, RedisBroker, placement
from taskq.brokers.redis_consumer import ms
from taskq.chords import CHORD_RESULTS, Added, ChordPart
from taskq.defaults import CHORD_RETENTION
from taskq.message import encode
from taskq.redis_db import Command

_RESULTS_MARK = orjson.dumps(CHORD_RESULTS)


def atomic_chords(broker: object, store: object) -> RedisChords | None:
    """The counter of `broker`, if it is a Redis broker on the Redis of `store`."""
    if isinstance(broker, RedisBroker) and getattr(store, "settings", None) == broker.settings:
        return RedisChords(broker)
    return None


@dataclass(slots=True)
class _Counted:
    part: ChordPart
    published: bool = False


class RedisChords:
    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._parts: Batcher[_Counted, None] = Batcher(self._count)

    async def chord_part_done(self, part: ChordPart) -> bool:
        counted = _Counted(part)
        await self._parts.submit(counted)
        return counted.published

    async def add_member(self, queue: str, group_id: str, token: str, task_id: str) -> Added:
        queue_keys = self._broker.keys(queue)
        keys = [*queue_keys.keys, queue_keys.chord(group_id)[2]]
        command = SCRIPTS.call("chord_add_member", keys, [token, task_id, ms(CHORD_RETENTION)])
        [added] = await self._broker.run([command], "adding a chord member")
        return Added.decode(added)

    async def _count(self, counted: list[_Counted]) -> None:
        """One script call per callback queue for the members of one loop turn."""
        by_queue: dict[str, dict[str, list[_Counted]]] = {}
        for item in counted:
            chords = by_queue.setdefault(item.part.publishes.callback.queue, {})
            chords.setdefault(item.part.group_id, []).append(item)
        commands = [self._call(queue, chords) for queue, chords in by_queue.items()]
        replies = await self._broker.run(commands, "counting chord members")
        for chords, published in zip(by_queue.values(), replies, strict=True):
            for items, done in zip(chords.values(), published, strict=True):
                items[-1].published = bool(done)

    def _call(self, queue: str, chords: dict[str, list[_Counted]]) -> Command:
        queue_keys = self._broker.keys(queue)
        keys: list[str] = list(queue_keys.keys)
        args: list[Any] = [queue_keys.channel, ms(CHORD_RETENTION)]
        now = time.time()
        for group_id, items in chords.items():
            keys += queue_keys.chord(group_id)
            args += self._fields(items[0].part, now)
            args.append(len(items))
            for item in items:
                args += (item.part.index, (b"f" if item.part.failed else b"s") + item.part.outcome)
        return SCRIPTS.call("chord", keys, args)

    def _fields(self, part: ChordPart, now: float) -> list[Any]:
        limit, publishes = self._broker.options.max_message_bytes, part.publishes
        splice, head, tail = _split(encode(publishes.callback, limit))
        _, failure_head, failure_tail = _split(encode(publishes.failure, limit))
        band, due, token = placement(publishes.callback, now)
        return [part.size, band, due, token, splice, head, tail, failure_head, failure_tail]


def _split(envelope: bytes) -> tuple[int, bytes, bytes]:
    """(1, head, tail) around the `CHORD_RESULTS` mark, or (0, envelope, b"") without one.
    The first mark is the one in `args`: `id` and `task`, before it, cannot hold it."""
    at = envelope.find(_RESULTS_MARK)
    if at < 0:
        return 0, envelope, b""
    return 1, envelope[:at], envelope[at + len(_RESULTS_MARK) :]
