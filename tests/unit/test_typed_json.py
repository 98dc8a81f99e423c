"""Typed JSON values: datetime, date, time, timedelta, UUID and Decimal come back as their
types, in kombu's tagged form, nested anywhere; everything else is plain JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import orjson
import pytest

from taskq import typed_json
from taskq.errors import MessageError
from taskq.message import Message, decode, encode
from taskq.serializers import get_serializer
from taskq.stores.base import TaskMeta

PARIS_WINTER = dt.timezone(dt.timedelta(hours=1))

TYPED: list[Any] = [
    dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 2, 10, 0, 5, 123456, tzinfo=PARIS_WINTER),
    dt.datetime(2026, 12, 2, 10, 0, 5, 7),  # naive
    dt.date(2026, 12, 2),
    dt.time(23, 59, 59, 999999),
    dt.time(8, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    uuid.uuid4(),
    uuid.uuid1(),
    uuid.UUID(int=0),  # no RFC 4122 version
    Decimal("1.10"),
    Decimal("-0.000"),
    Decimal("123456789012345678901234567890.123456789"),
    Decimal("1E+3"),
    Decimal("Infinity"),
]


def same(back: Any, value: Any) -> None:
    """`back` is `value`'s type and equal to it, down to the zone or the digits."""
    assert type(back) is type(value)
    assert back == value
    if isinstance(value, dt.datetime | dt.time):
        assert back.utcoffset() == value.utcoffset()  # naive stays naive (None)
    if isinstance(value, Decimal):
        assert str(back) == str(value)


@pytest.mark.parametrize("value", TYPED, ids=repr)
def test_each_type_comes_back_as_itself_alone_and_nested(value: Any) -> None:
    nested = {"list": [1, value, ["deeper", value]], "dict": {"key": {"key": value}}}
    same(typed_json.loads(typed_json.dumps(value)), value)
    back = typed_json.loads(typed_json.dumps(nested))
    for found in (back["list"][1], back["list"][2][1], back["dict"]["key"]["key"]):
        same(found, value)
    assert back["list"][0] == 1 and back["list"][2][0] == "deeper"


def test_the_wire_form_is_kombus() -> None:
    value = uuid.UUID("a8098c1a-f86e-41d4-a716-446655440000")
    assert orjson.loads(typed_json.dumps([dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)])) == [
        {"__type__": "datetime", "__value__": "2026-12-02T10:00:00+00:00"}
    ]
    assert orjson.loads(typed_json.dumps({"d": dt.date(2026, 12, 2), "t": dt.time(10, 0, 1)})) == {
        "d": {"__type__": "date", "__value__": "2026-12-02"},
        "t": {"__type__": "time", "__value__": "10:00:01"},
    }
    assert orjson.loads(typed_json.dumps([Decimal("1.10"), value])) == [
        {"__type__": "decimal", "__value__": "1.10"},
        {"__type__": "uuid", "__value__": {"hex": value.hex, "version": 4}},
    ]
    assert orjson.loads(typed_json.dumps(dt.timedelta(days=1, seconds=2, microseconds=3))) == {
        "__type__": "timedelta",
        "__value__": {"days": 1, "seconds": 2, "microseconds": 3},
    }


def test_what_kombu_writes_is_read() -> None:
    """kombu's `json.dumps` spaces its separators; older kombu gave a UUID's hex alone."""
    raw = (
        b'[{"__type__": "datetime", "__value__": "2026-12-02T10:00:00.500000+01:00"}, '
        b'{"__type__": "uuid", "__value__": {"hex": "a8098c1af86e41d4a716446655440000"}}, '
        b'{"__type__": "decimal", "__value__": "0.1"}]'
    )
    assert typed_json.loads(raw) == [
        dt.datetime(2026, 12, 2, 10, 0, 0, 500000, tzinfo=PARIS_WINTER),
        uuid.UUID("a8098c1a-f86e-41d4-a716-446655440000"),
        Decimal("0.1"),
    ]


def test_tuples_come_back_as_lists() -> None:
    assert typed_json.loads(typed_json.dumps((1, (2, uuid.UUID(int=5))))) == [
        1,
        [2, uuid.UUID(int=5)],
    ]


def test_a_string_shaped_like_a_uuid_stays_a_string() -> None:
    text = str(uuid.uuid4())
    assert typed_json.loads(typed_json.dumps([text, {"id": text}])) == [text, {"id": text}]


def test_uuids_inside_dict_and_list_subclasses_and_dataclasses_are_kept() -> None:
    @dataclasses.dataclass
    class Order:
        id: uuid.UUID
        placed: dt.date
        _secret: str = "not written"

    key = uuid.uuid4()
    value = [OrderedDict(k=key), type("Ids", (list,), {})([key]), Order(key, dt.date(2026, 1, 2))]
    assert typed_json.loads(typed_json.dumps(value)) == [
        {"k": key},
        [key],
        {"id": key, "placed": dt.date(2026, 1, 2)},
    ]


def test_subclasses_come_back_as_the_base_type() -> None:
    class FakeDatetime(dt.datetime):  # what freezegun hands out
        pass

    class Ticket(uuid.UUID):
        pass

    moment, ticket = FakeDatetime(2026, 12, 2, 10), Ticket(int=7)
    back = typed_json.loads(typed_json.dumps([moment, ticket]))
    assert [type(item) for item in back] == [dt.datetime, uuid.UUID]
    assert back == [dt.datetime(2026, 12, 2, 10), uuid.UUID(int=7)]


@pytest.mark.parametrize(
    "value",
    [
        {"__type__": "bytes", "__value__": "abc"},  # kombu's, not read here
        {"__type__": "datetime"},
        {"__type__": "datetime", "__value__": "2026-12-02", "other": 1},
        {"__type__": 3, "__value__": "x"},
        {"__type__": ["datetime"], "__value__": "x"},
    ],
    ids=repr,
)
def test_other_dicts_with_a_type_key_come_back_unchanged(value: dict[str, Any]) -> None:
    assert typed_json.loads(orjson.dumps([value])) == [value]


def test_the_contents_of_an_unknown_tag_are_still_read() -> None:
    value = {"__type__": "money", "__value__": Decimal("9.99")}
    assert typed_json.loads(typed_json.dumps(value)) == value


@pytest.mark.parametrize(
    ("tagged", "error"),
    [
        ({"__type__": "date", "__value__": "2026-13-01"}, "tagged date '2026-13-01' does not"),
        ({"__type__": "datetime", "__value__": 1700000000}, "tagged datetime 1700000000 does"),
        ({"__type__": "decimal", "__value__": 1.1}, "tagged decimal 1.1 does not parse"),
        ({"__type__": "decimal", "__value__": "one"}, "tagged decimal 'one' does not parse"),
        ({"__type__": "uuid", "__value__": {"hex": "xyz"}}, "tagged uuid {'hex': 'xyz'} does"),
        ({"__type__": "uuid", "__value__": "a8098c1a"}, "tagged uuid 'a8098c1a' does not"),
        ({"__type__": "timedelta", "__value__": {"years": 1}}, "tagged timedelta {'years': 1}"),
    ],
    ids=lambda case: repr(case) if isinstance(case, dict) else "",
)
def test_a_tagged_value_that_does_not_parse_is_an_error(tagged: dict[str, Any], error: str) -> None:
    with pytest.raises(MessageError, match="^" + re.escape(error)):
        typed_json.loads(orjson.dumps({"args": [tagged]}))


def test_other_types_are_refused_as_orjson_refuses_them() -> None:
    with pytest.raises(TypeError, match="Type is not JSON serializable: complex"):
        typed_json.dumps([1j])


def test_arguments_and_results_keep_their_types_in_the_envelope_and_the_meta() -> None:
    args: list[Any] = [list(TYPED), tuple(TYPED)]
    kwargs = {f"k{index}": value for index, value in enumerate(TYPED)}
    message = decode(encode(Message(id="m", task="t", args=args, kwargs=kwargs)), {"json"})
    for back, value in zip(message.args[0], TYPED, strict=True):
        same(back, value)
    assert message.args[1] == list(TYPED)
    for index, value in enumerate(TYPED):
        same(message.kwargs[f"k{index}"], value)
    meta = TaskMeta.decode(TaskMeta("m", "SUCCESS", result={"values": TYPED}).encode())
    for back, value in zip(meta.result["values"], TYPED, strict=True):
        same(back, value)


def test_compressed_json_arguments_keep_their_types() -> None:
    raw = encode(Message(id="m", task="t", args=list(TYPED), compression="gzip"))
    for back, value in zip(decode(raw, {"json"}).args, TYPED, strict=True):
        same(back, value)


def test_the_json_serializer_keeps_the_types() -> None:
    json = get_serializer("json")
    assert json.loads(json.dumps([Decimal("2.50"), {1: dt.date(2026, 1, 1)}])) == [
        Decimal("2.50"),
        {"1": dt.date(2026, 1, 1)},
    ]


def test_a_message_with_a_bad_tagged_argument_is_malformed() -> None:
    raw = encode(Message(id="m", task="t", args=[{"__type__": "date", "__value__": "soon"}]))
    with pytest.raises(MessageError, match=r"^malformed message: tagged date 'soon' does not"):
        decode(raw, {"json"})
