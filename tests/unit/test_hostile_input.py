"""The envelope decoder against hostile input (Hypothesis): arbitrary bytes, valid envelopes
mutated, wrong types in every field, deep nesting, huge numbers, NaN and Infinity, invalid
UTF-8, oversized bodies. `decode` returns a message or raises `MessageError`, nothing else,
and never runs long: the size bound holds before parsing, the nesting bound before anything
walks the value."""

from __future__ import annotations

import base64
import gzip
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskq import defaults
from taskq.errors import MessageError
from taskq.message import _NAMES, Message, decode, encode
from taskq.signing import Signing

ACCEPT = ["json", "msgpack"]
SMALL_LIMIT = 64 * 1024
fuzz = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

MUTABLE = encode(
    Message(id="t1", task="t.add", args=[{"a": [1, 2.5, "x"]}], headers={"h": 1}, sent_at=1.0)
)
VALID = orjson.loads(encode(Message(id="t1", task="t.add", args=[1, 2], kwargs={"k": "v"})))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def decodes_or_refuses(raw: bytes, max_bytes: int = SMALL_LIMIT) -> None:
    started = time.monotonic()
    try:
        decode(raw, ACCEPT, max_bytes)
    except MessageError as exc:
        assert len(str(exc)) < 1000, "an error is one line, not the message echoed back"
    assert time.monotonic() - started < 5, "the decoder must never run long"


@fuzz
@given(st.binary(max_size=2048))
@example(b"\xff\xfe{")
@example(b'{"id": "\xff", "task": "t", "v": 1}')
@example(b"[" * 5000)
@example(b'{"id":"a","task":"t","v":1,"eta":NaN}')
@example(b'{"id":"a","task":"t","v":1,"eta":Infinity}')
@example(b'{"id":"a","task":"t","v":1,"eta":1e400}')
def test_arbitrary_bytes(raw: bytes) -> None:
    decodes_or_refuses(raw)


@fuzz
@given(st.sampled_from([*_NAMES, "body", "signature"]), json_values)
def test_any_value_in_any_field(name: str, value: Any) -> None:
    decodes_or_refuses(orjson.dumps({**VALID, name: value}))


HUGE_NUMBERS = [
    b"1e308",
    b"-1e308",
    b"1e400",
    b"18446744073709551616",
    b"1" + b"0" * 5000,
    b"-0",
    b"5e-324",
]


@fuzz
@given(st.sampled_from(_NAMES), st.sampled_from(HUGE_NUMBERS))
def test_huge_numbers_in_any_field(name: str, number: bytes) -> None:
    head = orjson.dumps({key: value for key, value in VALID.items() if key != name})[:-1]
    decodes_or_refuses(head + b',"' + name.encode() + b'":' + number + b"}")


@fuzz
@given(st.data())
def test_mutated_valid_envelopes(data: st.DataObject) -> None:
    raw = bytearray(MUTABLE)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at : at + data.draw(st.integers(1, 16))]
        else:
            raw[at:at] = data.draw(
                st.sampled_from([b"[", b"{", b'"', b"\\", b"\xc3", b"1e999", b"-", b",", b"null"])
            )
        if not raw:
            break
    decodes_or_refuses(bytes(raw))


@fuzz
@given(
    st.integers(1, 3000),
    st.sampled_from(["args", "kwargs", "headers", "chain", "chord", "callbacks"]),
    st.sampled_from(["[", '{"k":']),
)
def test_deep_nesting_is_refused_with_a_reason(depth: int, field: str, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    deep = opener * depth + "1" + closer * depth
    head = orjson.dumps({**VALID, field: None})[:-1]
    raw = head + b',"' + field.encode() + b'":' + deep.encode() + b"}"
    if depth + 1 <= defaults.MAX_NESTING:  # the envelope is a level
        decodes_or_refuses(raw, defaults.MAX_MESSAGE_BYTES)
        return
    with pytest.raises(MessageError, match=r"nested deeper than|depth limit exceeded"):
        decode(raw, ACCEPT, defaults.MAX_MESSAGE_BYTES)


def test_nesting_in_a_compressed_body_is_bounded_too() -> None:
    payload = gzip.compress(b"[[" + b"[" * 900 + b"]" * 900 + b"],{}]")
    body = base64.b64encode(payload).decode()
    raw = orjson.dumps({**VALID, "compression": "gzip", "body": body})
    with pytest.raises(MessageError, match="nested deeper than"):
        decode(raw, ACCEPT)


def test_an_oversized_message_is_refused_before_it_is_parsed() -> None:
    raw = orjson.dumps({**VALID, "args": ["x" * (SMALL_LIMIT + 1)]})
    with pytest.raises(MessageError, match=f"over the limit of {SMALL_LIMIT}"):
        decode(raw, ACCEPT, SMALL_LIMIT)


@fuzz
@given(st.binary(max_size=512))
def test_a_signed_envelope_stays_a_message_error_under_mutation(tail: bytes) -> None:
    signing = Signing([b"k" * 32])
    raw = signing.sign(encode(Message(id="t1", task="t.add")))
    for candidate in (raw[: len(raw) // 2] + tail, tail + raw, raw[:-1] + tail + b"}"):
        try:
            envelope = signing.verified(candidate)
        except MessageError:
            continue
        decodes_or_refuses(envelope)
