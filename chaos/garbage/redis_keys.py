"""Garbage written straight into the Redis broker's own keys (their layout is in the header of
taskq/brokers/redis.lua): stream entries without an envelope or with a bad delivery count,
delayed-set members that do not parse, and lease members that name no delivery."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio

from chaos.garbage.envelopes import base_envelope, serialized
from chaos.garbage.inputs import Input, mark_of
from chaos.garbage.writers import RedisWriter

BAD_DELIVERY_COUNTS = ["abc", "", "1e400", "-1", "0x10"]
BAD_LEASE_MEMBERS = ["zzz", "0", "9not-an-id", "", "x0-1", "10-0"]


@dataclass
class KeyGarbage:
    inputs: list[Input] = field(default_factory=list)  # each must end up run or dead-lettered
    lease_members: list[str] = field(default_factory=list)  # name no message: nothing to run
    entries: list[dict[str, bytes | str]] = field(default_factory=list)
    delayed: list[str] = field(default_factory=list)


def key_garbage(queue: str, per_kind: int, token: str, rng: random.Random) -> KeyGarbage:
    """`per_kind` inputs of each kind, and as many lease members."""
    numbers = itertools.count()

    def mark() -> str:
        return mark_of(next(numbers), token)

    def envelope(of: str) -> str:
        return serialized(base_envelope(of, queue, rng)).decode()

    garbage = KeyGarbage()
    for _ in range(per_kind):
        add_stream_entries(garbage, mark, envelope, rng)
        add_delayed_members(garbage, mark, envelope)
        garbage.lease_members.append(rng.choice(BAD_LEASE_MEMBERS))
    return garbage


async def write_key_garbage(url: str, queue: str, garbage: KeyGarbage, band: int) -> None:
    """Into the queue's delayed set, lease set and stream of priority `band`, at once."""
    writer = RedisWriter(url, queue)
    async with redis.asyncio.Redis.from_url(url) as client:
        await add_due(client, f"{writer.keys.base}delayed", garbage.delayed)
        await add_due(client, f"{writer.keys.base}leases", garbage.lease_members)
    await writer.write_fields(garbage.entries, band=band)


def add_stream_entries(
    garbage: KeyGarbage, mark: Callable[[], str], envelope: Callable[[str], str], rng: random.Random
) -> None:
    """An entry without the envelope field `b`, and one whose delivery count `d` is no number."""
    lone = mark()
    garbage.entries.append({"x": lone})
    garbage.inputs.append(Input("stream entry without 'b'", b"", lone, anonymous=True))
    counted, count = mark(), rng.choice(BAD_DELIVERY_COUNTS)
    body = envelope(counted)
    garbage.entries.append({"b": body, "d": count})
    garbage.inputs.append(Input(f"stream entry with d={count!r}", body.encode(), counted, counted))


def add_delayed_members(
    garbage: KeyGarbage, mark: Callable[[], str], envelope: Callable[[str], str]
) -> None:
    """Members of the delayed set ("<band><deliveries>:<token>:<envelope>") that do not parse:
    whether one comes out with its envelope, or with none, is the broker's to say."""
    bare, band, count, single = mark(), mark(), mark(), mark()
    members = [
        ("delayed member without separators", f"{bare}", bare),
        ("delayed member with a non-digit band", f"x0:{band}:{envelope(band)}", band),
        ("delayed member with a non-digit count", f"0zz:{count}:{envelope(count)}", count),
        ("delayed member with one separator", f"00:{envelope(single)}", single),
    ]
    for kind, member, its_mark in members:
        garbage.delayed.append(member)
        garbage.inputs.append(Input(kind, member.encode(), its_mark, anonymous=True))


async def add_due(client: redis.asyncio.Redis, key: str, members: list[str]) -> None:
    """Members due a second ago (both sets score in epoch milliseconds)."""
    if members:
        due = int((time.time() - 1) * 1000)
        await client.zadd(key, dict.fromkeys(members, due))
