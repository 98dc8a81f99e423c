"""Random mutations of a valid envelope: fields dropped or of the wrong type, unknown task
names, bad workflow fields (`chain`, `callbacks`, `errbacks`, `chord`), huge and negative
numbers, bad priorities, content types and versions, arguments that do not fit, odd ids, and
bytes that are not JSON at all.

Every envelope starts as a valid call of `chaos.target_late` or `chaos.target_early` with the
input's mark as id, argument and header. Mutations never delay a message by more than a
second (an eta in the past or just ahead, no countdown in a nested signature), so every input
can be accounted for within the run.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from chaos.garbage.inputs import Input, mark_of
from taskq.message import Message, encode

TARGETS = ("chaos.target_late", "chaos.target_early")
WRONG_VALUES: list[Any] = [None, 0, -1, 1.5, "", "x", [], {}, True, [1, 2], {"a": 1}]
FIELDS = (
    "v",
    "id",
    "task",
    "args",
    "kwargs",
    "queue",
    "priority",
    "eta",
    "expires",
    "retries",
    "root_id",
    "parent_id",
    "group_id",
    "group_index",
    "group_size",
    "chain",
    "chord",
    "callbacks",
    "errbacks",
    "headers",
    "sent_at",
    "time_limit",
    "soft_time_limit",
    "exchange",
    "routing_key",
)
BIG = "9223372036854775807"  # the largest 64-bit integer
BEYOND_64_BITS = "123456789012345678901234567890"  # JSON allows it; orjson reads a float
INFINITE = "1e400"  # JSON allows it; orjson refuses it
EXTREMES: list[tuple[str, str]] = [
    ("retries", "-1"),
    ("retries", BIG),
    ("retries", BEYOND_64_BITS),
    ("retries", INFINITE),
    ("priority", BIG),
    ("priority", "-9223372036854775808"),
    ("group_index", "-9223372036854775808"),
    ("group_size", "-1"),
    ("group_size", BIG),
    ("time_limit", "-1"),
    ("time_limit", "1e308"),
    ("soft_time_limit", "-5"),
    ("soft_time_limit", "1e-300"),
    ("eta", "-1"),
    ("eta", "0"),
    ("eta", "-1e308"),
    ("expires", "1e308"),
    ("expires", BIG),
    ("sent_at", "-1e308"),
    ("sent_at", INFINITE),
    ("v", BIG),
    ("v", BEYOND_64_BITS),
]
PRIORITIES: list[Any] = [-1, 10, 100, "5", 5.5, True, None]
VERSIONS: list[Any] = [0, -1, 2, "1", 1.0, None]

Mutation = Callable[[dict[str, Any], str, random.Random], str]


class Raw:
    """A JSON text put in the envelope as it is (numbers orjson cannot write)."""

    def __init__(self, text: str) -> None:
        self.text = text


def base_envelope(mark: str, queue: str, rng: random.Random) -> dict[str, Any]:
    message = Message(
        id=mark, task=rng.choice(TARGETS), args=[mark], queue=queue, headers={"chaos_mark": mark}
    )
    envelope: dict[str, Any] = orjson.loads(encode(message))
    return envelope


def bad_signatures(mark: str) -> list[Any]:
    """Things that are not a signature, or signatures that cannot be launched."""
    target = TARGETS[0]
    return [
        1,
        "x",
        None,
        {},
        [],
        {"task": 5},
        {"task": target},
        {"task": f"chaos.no_such_task_{mark}", "args": [mark], "kwargs": {}, "options": {}},
        {"task": target, "args": "x", "kwargs": {}, "options": {}},
        {"task": target, "args": [mark], "kwargs": [], "options": {}},
        {"task": target, "args": [mark], "kwargs": {}, "options": {"countdown": "soon"}},
        {"task": target, "args": [mark], "kwargs": {}, "options": {"priority": 99}},
        {"task": target, "args": [mark], "kwargs": {}, "options": {}, "subtask_type": "chord"},
        {"subtask_type": "group", "kwargs": {"tasks": 5}, "options": {}},
        {"subtask_type": "chain", "kwargs": {"tasks": []}, "options": {}, "args": []},
    ]


def drop_field(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    name = rng.choice(FIELDS)
    envelope.pop(name, None)
    return f"drop {name!r}"


def wrong_type(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    name, value = rng.choice(FIELDS), rng.choice(WRONG_VALUES)
    if name == "expires" and type(value) in (int, float):
        value = "x"  # a number would be an expiry in the past: REVOKED, a documented outcome
    envelope[name] = value
    return f"{name}: {value!r}"


def unknown_task(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    envelope["task"] = f"chaos.no_such_task_{mark}"
    return "unknown task"


def bad_links(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    name = rng.choice(["chain", "callbacks", "errbacks"])
    value = rng.choice([[rng.choice(bad_signatures(mark))], "x", 5, {}])
    envelope[name] = value
    return f"{name}: {_short(value)}"


def bad_chord(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    callback = {"task": "chaos.collect", "args": [], "kwargs": {}, "options": {}}
    envelope["chord"] = rng.choice([*bad_signatures(mark), callback])
    envelope["group_id"] = rng.choice([f"group-{mark}", None, 5])
    envelope["group_index"] = rng.choice([0, -1, 5, 10**6])
    envelope["group_size"] = rng.choice([1, 0, -1, 2])
    fields = ("chord", "group_id", "group_index", "group_size")
    return "chord: " + ", ".join(f"{name}={_short(envelope[name])}" for name in fields)


def extreme_number(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    name, text = rng.choice(EXTREMES)
    envelope[name] = Raw(text)
    return f"{name}: {text}"


def eta_just_ahead(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    envelope["eta"] = time.time() + rng.uniform(0, 1)
    return "eta within a second"


def bad_priority(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    envelope["priority"] = value = rng.choice(PRIORITIES)
    return f"priority: {value!r}"


def bad_content(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    content, body = rng.choice(
        [
            ("pickle", None),
            ("msgpack", None),
            ("msgpack", "!!!"),
            ("msgpack", 5),
            ("application/x-unknown", None),
            ("json", "e30="),
            (5, None),
        ]
    )
    envelope["content_type"] = content
    if body is not None:
        envelope["body"] = body
    return f"content_type: {content!r}, body: {body!r}"


def bad_version(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    envelope["v"] = value = rng.choice(VERSIONS)
    return f"v: {value!r}"


def bad_arguments(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    args, kwargs = rng.choice(
        [
            ([], {}),
            ([mark, 1, 2], {}),
            ([mark], {"bogus": 1}),
            ([], {"mark": mark}),
            ([mark, "x" * 100_000], {}),
            ([{"nested": [mark] * 100}], {}),
        ]
    )
    envelope["args"], envelope["kwargs"] = args, kwargs
    return f"arguments: {_short(args)}, {_short(kwargs)}"


def odd_id(envelope: dict[str, Any], mark: str, rng: random.Random) -> str:
    value = rng.choice(["", f"{mark}-" + "x" * 10_000, f"ü-{mark}-ß", f"{mark}:{{q}}:s0"])
    envelope["id"] = value
    return f"id: {_short(value)}"


MUTATIONS: list[Mutation] = [
    drop_field,
    wrong_type,
    unknown_task,
    bad_links,
    bad_chord,
    extreme_number,
    eta_just_ahead,
    bad_priority,
    bad_content,
    bad_version,
    bad_arguments,
    odd_id,
]


def not_json(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The envelope's bytes broken so that they are not a JSON object."""
    cut = rng.randrange(len(raw))
    return rng.choice(
        [
            ("truncated", raw[:cut]),
            ("invalid UTF-8", raw[:cut] + b"\xff\xfe" + raw[cut:]),
            ("trailing garbage", raw + b"}{"),
            ("a JSON list", b"[" + raw + b"]"),
            ("a JSON string", orjson.dumps(raw.decode())),
            ("null", b"null"),
            ("empty", b""),
            ("NaN", raw[:-1] + b',"x":NaN}'),
            ("deeply nested", b'{"a":' * 5000 + raw + b"}" * 5000),
            ("byte order mark", b"\xef\xbb\xbf" + raw),
            ("single quotes", raw.replace(b'"', b"'")),
        ]
    )


def envelope_inputs(count: int, queue: str, token: str, rng: random.Random) -> list[Input]:
    """`count` mutated envelopes; an id that several of them ended up with identifies none."""
    inputs = [mutated(mark_of(index, token), queue, rng) for index in range(count)]
    ids = Counter(one.task_id for one in inputs)
    return [one if ids[one.task_id] == 1 else replace(one, task_id=None) for one in inputs]


def mutated(mark: str, queue: str, rng: random.Random) -> Input:
    """One to three mutations, or (one time in six) bytes that are not JSON at all."""
    envelope = base_envelope(mark, queue, rng)
    broken = rng.random() < 1 / 6
    kinds = [
        mutation(envelope, mark, rng)
        for mutation in rng.sample(MUTATIONS, rng.randint(0 if broken else 1, 2 if broken else 3))
    ]
    body = serialized(envelope)
    task_id = envelope.get("id") if isinstance(envelope.get("id"), str) else None
    if broken:
        kind, body = not_json(body, rng)
        kinds.append(kind)
        task_id = None
    anonymous = mark.encode() not in body
    return Input("; ".join(kinds), body, mark, task_id or None, anonymous)


def serialized(envelope: dict[str, Any]) -> bytes:
    texts: dict[bytes, bytes] = {}

    def placeholder(value: Raw) -> str:
        key = f"@raw{len(texts)}@"
        texts[orjson.dumps(key)] = value.text.encode()
        return key

    body = orjson.dumps(envelope, default=placeholder)
    for key, text in texts.items():
        body = body.replace(key, text)
    return body


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
