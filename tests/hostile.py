"""Hostile queue contents: messages no producer of taskq writes, each of which a worker must
dead-letter with a reason (none of them can run: a task name no app registers, arguments
that do not fit, or an envelope that does not decode). Deterministic for a seed."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

from taskq.message import Message, encode

UNREGISTERED = "hostile.no_such_task"
REGISTERED = "itest.add"  # takes (x, y)
OVERSIZED_LIMIT = 64 * 1024  # the task_max_message_bytes of the worker fed these


def _envelope(**fields: object) -> dict[str, object]:
    base = orjson.loads(encode(Message(id="h", task=UNREGISTERED, sent_at=1.0)))
    del base["eta"], base["expires"]  # no mutation can make it due later, or expired
    return {**base, **fields}


def _garbage(rng: random.Random, index: int) -> bytes:
    return rng.randbytes(rng.randint(0, 300))


def _not_an_object(rng: random.Random, index: int) -> bytes:
    return rng.choice([b"[]", b"null", b"1", b'"x"', b"true", b"[1,2]", b"{}", b""])


def _invalid_utf8(rng: random.Random, index: int) -> bytes:
    return orjson.dumps(_envelope(id=f"h{index}"))[:-1] + b',"x":"\xff\xfe"}'


def _wrong_type(rng: random.Random, index: int) -> bytes:
    name = rng.choice(sorted(_envelope()))
    value = rng.choice([[], {}, "x", -1, 1.5, True, None, [[1]], {"a": {}}])
    return orjson.dumps({**_envelope(id=f"h{index}", args=[1, 2]), name: value})


def _deep(rng: random.Random, index: int) -> bytes:
    depth = rng.randint(101, 3000)
    head = orjson.dumps(_envelope(id=f"h{index}", task=REGISTERED))[:-1]
    return head + b',"args":[' + b"[" * depth + b"]" * depth + b"]}"


def _huge_numbers(rng: random.Random, index: int) -> bytes:
    number = rng.choice([b"1e400", b"-1e999", b"1" + b"0" * 400, b"NaN", b"Infinity", b"-Infinity"])
    field = rng.choice([b"priority", b"retries", b"time_limit", b"group_index", b"args"])
    head = orjson.dumps(_envelope(id=f"h{index}"))[:-1]
    return head + b',"' + field + b'":' + number + b"}"


def _oversized(rng: random.Random, index: int) -> bytes:
    return orjson.dumps(_envelope(id=f"h{index}", args=["x" * (OVERSIZED_LIMIT + 10)]))


def _bad_tag(rng: random.Random, index: int) -> bytes:
    tag = rng.choice(["datetime", "date", "uuid", "decimal", "timedelta", "time"])
    return orjson.dumps(_envelope(id=f"h{index}", args=[{"__type__": tag, "__value__": "no"}]))


def _bad_arguments(rng: random.Random, index: int) -> bytes:
    args = rng.choice([[], [1], [1, 2, 3]])
    return orjson.dumps(_envelope(id=f"h{index}", task=REGISTERED, args=args))


def _unregistered(rng: random.Random, index: int) -> bytes:
    return orjson.dumps(_envelope(id=f"h{index}", args=[rng.random()]))


def _mutated(rng: random.Random, index: int) -> bytes:
    raw = bytearray(orjson.dumps(_envelope(id=f"h{index}", args=[1, {"k": [2.5, "v"]}])))
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(raw))
        choice = rng.random()
        if choice < 0.4:
            raw[at] = rng.randrange(256)
        elif choice < 0.7:
            del raw[at : at + rng.randint(1, 8)]
        else:
            raw[at:at] = rng.choice([b"[", b"{", b'"', b"\\", b"\xc3", b",", b"}"])
        if not raw:
            break
    return bytes(raw)


KINDS: list[Callable[[random.Random, int], bytes]] = [
    _garbage,
    _not_an_object,
    _invalid_utf8,
    _wrong_type,
    _deep,
    _huge_numbers,
    _oversized,
    _bad_tag,
    _bad_arguments,
    _unregistered,
    _mutated,
]


def hostile_bodies(count: int, seed: int = 17) -> list[bytes]:
    """`count` hostile bodies, every kind in turn."""
    rng = random.Random(seed)
    return [KINDS[index % len(KINDS)](rng, index) for index in range(count)]
