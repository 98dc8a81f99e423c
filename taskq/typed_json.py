"""JSON that keeps `datetime`, `date`, `time`, `timedelta`, `UUID` and `Decimal`: each is
written as `{"__type__": TAG, "__value__": ...}` and read back as its type. The tags are
kombu's (Celery 5.3+), so a mixed fleet reads and writes the same; kombu has no timedelta
(and refuses the tag). Tuples are written as lists and read back as lists.

orjson writes the plain values in C, and asks `_write_tagged` only for the types it cannot
(or, for the datetimes, is told not to) write itself. A UUID it always writes as a bare
string without asking: only when the text holds what looks like one is the value searched
for UUIDs, and written again with them tagged if it holds any. Reading walks the
structure only when the text holds a tag. Either way plain values cost a byte search.

Objects that write their own tagged form (`taskq.tagging`: result handles, remote errors)
are written too; reading them back needs an app (`taskq.result.restore`).

Imports nothing of taskq but `errors` and `tagging`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import reprlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import orjson

from taskq.errors import MessageError
from taskq.tagging import TYPE, VALUE

if TYPE_CHECKING:
    from decimal import Decimal

T = TypeVar("T")

_MARK = b'"__type__"'
_DASH = ord("-")  # `int in bytes`: `bytes in bytes` first tries the bytes as an int, slowly
# The middle of a UUID's text: the search starts only at dashes, found by memchr.
_UUID_TEXT = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-")
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})


def _uuid(value: UUID) -> dict[str, Any]:
    return {"hex": value.hex, "version": value.version}


def _timedelta(value: dt.timedelta) -> dict[str, int]:
    return {"days": value.days, "seconds": value.seconds, "microseconds": value.microseconds}


# Tag and writer of each type; `datetime` before `date`, which it subclasses. `Decimal` is
# added by the first one written (`_decimal_writer`): decimal is imported only when used.
_WRITERS: dict[type, tuple[str, Callable[[Any], Any]]] = {
    dt.datetime: ("datetime", dt.datetime.isoformat),
    dt.date: ("date", dt.date.isoformat),
    dt.time: ("time", dt.time.isoformat),
    dt.timedelta: ("timedelta", _timedelta),
    UUID: ("uuid", _uuid),
}
_DECIMAL_TAG = "decimal"


def _text(parse: Callable[[str], T]) -> Callable[[Any], T]:
    def read(value: Any) -> T:
        if type(value) is not str:
            raise TypeError("not a string")
        return parse(value)

    return read


def _read_uuid(value: Any) -> UUID:
    return UUID(hex=value["hex"])  # the version is in the hex already


def _read_timedelta(value: Any) -> dt.timedelta:
    return dt.timedelta(**value)


def _read_decimal(text: str) -> Decimal:
    from decimal import Decimal

    return Decimal(text)


_READERS: dict[str, Callable[[Any], Any]] = {
    "datetime": _text(dt.datetime.fromisoformat),
    "date": _text(dt.date.fromisoformat),
    "time": _text(dt.time.fromisoformat),
    "timedelta": _read_timedelta,
    _DECIMAL_TAG: _text(_read_decimal),
    "uuid": _read_uuid,
}


def dumps(value: Any, option: int = 0) -> bytes:
    """`value` as JSON bytes, its typed values tagged; orjson's `TypeError` for a value of
    any other type it cannot write."""
    option |= _OPTIONS
    raw = orjson.dumps(value, default=_write_tagged, option=option)
    if _DASH in raw and _UUID_TEXT.search(raw) and _holds_uuid(value):
        raw = orjson.dumps(_tagged_copy(value), default=_write_tagged, option=option)
    return raw


def loads(raw: bytes, max_depth: int | None = None) -> Any:
    """The value of JSON bytes, its tagged values read back as their types; a dict of
    another `__type__` stays a dict. `orjson.JSONDecodeError`, or `MessageError` for a
    tagged value that does not parse or a value nested deeper than `max_depth`."""
    value = orjson.loads(raw)  # itself refuses more than 1024 levels
    if max_depth is not None and raw.count(b"[") + raw.count(b"{") > max_depth:
        check_depth(value, max_depth)  # only a value with that many brackets can be as deep
    return _read_tags(value) if raw.find(_MARK) != -1 else value


def check_depth(value: Any, max_depth: int) -> None:
    """`MessageError` when lists and dicts in `value` nest deeper than `max_depth`; without
    recursion, so any depth is safe to look at."""
    stack = [(value, 1)] if type(value) in _CONTAINERS else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        if depth > max_depth:
            raise MessageError(f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if type(child) in _CONTAINERS)


def _write_tagged(value: Any) -> dict[str, Any]:
    """orjson's `default`: the tagged form of a value of one of the types, or of a subclass
    (freezegun's `FakeDatetime`, pendulum's `DateTime`)."""
    written = _WRITERS.get(type(value)) or _decimal_writer(value)
    if written is None:
        written = next((w for kind, w in _WRITERS.items() if isinstance(value, kind)), None)
        if written is None:
            return _self_tagged(value)
    tag, write = written
    return {TYPE: tag, VALUE: write(value)}


def _decimal_writer(value: Any) -> tuple[str, Callable[[Any], Any]] | None:
    """The writer of a `Decimal` (or subclass), which `_WRITERS` then holds; None for any
    other value. There is no Decimal before its module is imported."""
    decimal = sys.modules.get("decimal")
    if decimal is None or not isinstance(value, decimal.Decimal):
        return None
    written = _WRITERS[decimal.Decimal] = (_DECIMAL_TAG, str)
    return written


def _self_tagged(value: Any) -> dict[str, Any]:
    """The tagged form an object writes of itself (a result handle, a remote error: see
    `taskq.tagging`); orjson's `TypeError` for any other."""
    tagged = getattr(value, "tagged_json", None)
    if tagged is None:
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
    written: dict[str, Any] = tagged()
    return written


def _holds_uuid(value: Any) -> bool:
    """Whether a UUID is in `value`, searching what orjson writes as arrays and objects:
    lists, tuples, dicts (subclasses of list and dict too) and dataclasses."""
    kind = type(value)
    if kind is UUID:
        return True
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list) or kind is tuple:
        items = value
    elif hasattr(kind, "__dataclass_fields__"):
        items = _dataclass_fields(value).values()
    else:
        return False
    return any(type(item) not in _SCALARS and _holds_uuid(item) for item in items)


def _tagged_copy(value: Any) -> Any:
    kind = type(value)
    if kind is UUID:
        return _write_tagged(value)
    if isinstance(value, dict):
        return {key: _tagged_copy(item) for key, item in value.items()}
    if isinstance(value, list) or kind is tuple:
        return [_tagged_copy(item) for item in value]
    if hasattr(kind, "__dataclass_fields__"):
        return {key: _tagged_copy(item) for key, item in _dataclass_fields(value).items()}
    return value


def _dataclass_fields(value: Any) -> dict[str, Any]:
    """A dataclass's fields as orjson writes them: in order, but for those named `_...`."""
    return {
        field.name: getattr(value, field.name)
        for field in dataclasses.fields(value)
        if not field.name.startswith("_")
    }


_CONTAINERS = (dict, list)


def _read_tags(value: Any) -> Any:
    """`value` (fresh from orjson, changed in place) with its tagged values read."""
    if type(value) is dict:
        tag = value.get(TYPE)
        if len(value) == 2 and type(tag) is str and tag in _READERS and VALUE in value:
            return _read(tag, value[VALUE])
        for key, item in value.items():
            value[key] = _read_tags(item)
    elif type(value) is list:
        for index, item in enumerate(value):
            value[index] = _read_tags(item)
    return value


def _read(tag: str, value: Any) -> Any:
    try:
        return _READERS[tag](value)
    except (TypeError, ValueError, KeyError, ArithmeticError) as exc:  # decimal's are arithmetic
        raise MessageError(
            f"tagged {tag} {reprlib.repr(value)} does not parse ({reprlib.repr(str(exc))[1:-1]})"
        ) from None
