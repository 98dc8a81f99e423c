"""The message envelope: one JSON object per task.

Field names are the contract between producers and workers of different versions:
add fields, never repurpose them. Unknown fields are ignored on decode.

Arguments are JSON values inside the envelope, datetimes, UUIDs and decimals among them
as `typed_json` tags them. With another serializer (msgpack, pickle) the envelope stays
JSON and carries `content_type` plus `body`, the base64 text of the serialized
`[args, kwargs]`, so that a worker can refuse the content type before it deserializes
anything.

With `compression` (gzip), the body is used for JSON arguments too, compressed.

Imports nothing of taskq but `errors`, `serializers`, `compression`, `typed_json`,
`signing` and `elements`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

import orjson

from taskq import defaults, typed_json
from taskq.compression import compress, decompress
from taskq.elements import check_element, check_elements
from taskq.errors import MessageError, MessageTooLargeError
from taskq.serializers import check_accepted, get_serializer
from taskq.signing import Signing

ENVELOPE_VERSION = 1
JSON = "json"

SignatureDict = dict[str, Any]

_NONE: type = type(None)
_STRING: frozenset[type] = frozenset({str})
_INTEGER: frozenset[type] = frozenset({int})
_NUMBER: frozenset[type] = frozenset({int, float, _NONE})  # by exact type: true is not a number
_OPTIONAL_STRING: frozenset[type] = frozenset({str, _NONE})
_OPTIONAL_INTEGER: frozenset[type] = frozenset({int, _NONE})
_OPTIONAL_BOOL: frozenset[type] = frozenset({bool, _NONE})
_OPTIONAL_LIST: frozenset[type] = frozenset({list, _NONE})
_OPTIONAL_DICT: frozenset[type] = frozenset({dict, _NONE})


def _wire(types: frozenset[type], described: str, *, required: bool = False) -> dict[str, Any]:
    """A field's metadata: the JSON types it may have in the envelope, how an error names
    them, and whether it must be there. Else its default stands for a null (or missing)
    value on the wire."""
    return {"types": types, "described": described, "required": required}


_REQUIRED_TEXT = _wire(_STRING, "a string", required=True)
_TEXT = _wire(_STRING, "a string")
_WHOLE = _wire(_INTEGER, "an integer")
_OPTIONAL_TEXT = _wire(_OPTIONAL_STRING, "a string")
_OPTIONAL_WHOLE = _wire(_OPTIONAL_INTEGER, "an integer")
_TIME = _wire(_NUMBER, "a number")
_LIST = _wire(_OPTIONAL_LIST, "a list")
_DICT = _wire(_OPTIONAL_DICT, "a dict")


@dataclass(slots=True)
class Message:
    """The envelope. Its fields are the table the wire format is checked, written and read
    by: each carries its JSON types, and its default stands in for a null or missing value."""

    id: str = field(metadata=_REQUIRED_TEXT)
    task: str = field(metadata=_REQUIRED_TEXT)
    args: list[Any] = field(default_factory=list, metadata=_LIST)
    kwargs: dict[str, Any] = field(default_factory=dict, metadata=_DICT)
    queue: str = field(default=defaults.QUEUE, metadata=_OPTIONAL_TEXT)
    priority: int | None = field(default=None, metadata=_wire(_OPTIONAL_INTEGER, "an integer 0-9"))
    eta: float | None = field(default=None, metadata=_TIME)
    expires: float | None = field(default=None, metadata=_TIME)
    retries: int = field(default=0, metadata=_WHOLE)
    root_id: str | None = field(default=None, metadata=_OPTIONAL_TEXT)
    parent_id: str | None = field(default=None, metadata=_OPTIONAL_TEXT)
    group_id: str | None = field(default=None, metadata=_OPTIONAL_TEXT)
    group_index: int | None = field(default=None, metadata=_OPTIONAL_WHOLE)
    group_size: int | None = field(default=None, metadata=_OPTIONAL_WHOLE)
    chain: list[SignatureDict] = field(default_factory=list, metadata=_LIST)
    chord: SignatureDict | None = field(default=None, metadata=_wire(_OPTIONAL_DICT, "a signature"))
    callbacks: list[SignatureDict] = field(default_factory=list, metadata=_LIST)
    errbacks: list[SignatureDict] = field(default_factory=list, metadata=_LIST)
    headers: dict[str, Any] = field(default_factory=dict, metadata=_DICT)
    sent_at: float = field(default_factory=time.time, metadata=_TIME)
    time_limit: float | None = field(default=None, metadata=_TIME)
    soft_time_limit: float | None = field(default=None, metadata=_TIME)
    exchange: str | None = field(default=None, metadata=_OPTIONAL_TEXT)
    routing_key: str | None = field(default=None, metadata=_OPTIONAL_TEXT)
    ignore_result: bool | None = field(
        default=None, metadata=_wire(_OPTIONAL_BOOL, "true, false or null")
    )
    content_type: str = field(default=JSON, metadata=_TEXT)
    compression: str | None = field(default=None, metadata=_OPTIONAL_TEXT)
    v: int = field(default=ENVELOPE_VERSION, metadata=_wire(_INTEGER, "an integer", required=True))


def _default_of(spec: Field[Any]) -> Callable[[], Any] | None:
    """What makes a field's default, unless it is None (or the field must be given)."""
    if spec.metadata["required"]:
        return None
    if spec.default_factory is not MISSING:
        return spec.default_factory
    value = spec.default
    return None if value is None or value is MISSING else lambda: value


_FIELDS = fields(Message)
_NAMES = [spec.name for spec in _FIELDS]
_TYPES = [spec.metadata["types"] for spec in _FIELDS]
# Where a null (or missing) value on the wire takes the field's default, for fields whose
# default is not None. `sent_at` defaults to now for a new message; a message that came
# without it was sent at no time known.
_NULL_DEFAULTS = [
    (index, float if spec.name == "sent_at" else default)
    for index, spec in enumerate(_FIELDS)
    if (default := _default_of(spec)) is not None
]
_DESCRIBED: dict[str, str] = {spec.name: spec.metadata["described"] for spec in _FIELDS}


def _compile_envelope() -> Callable[[Message], dict[str, Any]]:
    """`message -> {name: value}` over the table, as one dict display (the way dataclasses
    write `__init__`): built field by field, or by orjson from the dataclass, each publish
    costs a microsecond more."""
    items = ", ".join(f"{spec.name!r}: message.{spec.name}" for spec in _FIELDS)
    envelope: Callable[[Message], dict[str, Any]] = eval(f"lambda message: {{{items}}}")
    return envelope


_envelope = _compile_envelope()


def encode(message: Message, max_bytes: int | None = None, signing: Signing | None = None) -> bytes:
    """The envelope's bytes, signed with `signing`; `MessageTooLargeError` past `max_bytes`
    (which bounds the arguments before compression too: a worker refuses to inflate a body
    past it)."""
    data = _envelope(message)
    if message.content_type != JSON or message.compression is not None:
        try:
            payload = get_serializer(message.content_type).dumps([message.args, message.kwargs])
        except TypeError as exc:
            raise _unserializable(message, exc) from exc
        if message.compression is not None:
            _check_size(message, len(payload), max_bytes, "arguments before compression")
            payload = compress(payload)
        data["args"], data["kwargs"] = [], {}
        data["body"] = base64.b64encode(payload).decode("ascii")
    try:
        raw = typed_json.dumps(data)
    except TypeError as exc:
        raise _unserializable(message, exc) from exc
    if signing is not None:
        raw = signing.sign(raw)
    _check_size(message, len(raw), max_bytes, "message")
    return raw


def _unserializable(message: Message, exc: TypeError) -> MessageError:
    return MessageError(f"task {message.task!r}: arguments are not serializable: {exc}")


def _check_size(message: Message, size: int, max_bytes: int | None, what: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise MessageTooLargeError(
            f"task {message.task!r}: {what} is {size} bytes, over the limit of "
            f"{max_bytes} (task_max_message_bytes)"
        )


def peek_id(raw: bytes) -> str | None:
    """The task id of a message that may not decode, for recording its failure."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    task_id = data.get("id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def decode(
    raw: bytes,
    accept_content: frozenset[str] | set[str] | list[str],
    max_bytes: int = defaults.MAX_MESSAGE_BYTES,
) -> Message:
    """Parse and validate an envelope; `MessageError` (or `ContentRefusedError`) says why not.
    Bounded before anything is parsed: `max_bytes` of envelope, and a compressed body may not
    inflate past it; `defaults.MAX_NESTING` levels of arrays and objects."""
    if len(raw) > max_bytes:
        raise MessageTooLargeError(
            f"malformed message: {len(raw)} bytes, over the limit of {max_bytes}"
            " (task_max_message_bytes)"
        )
    try:
        data = typed_json.loads(raw, defaults.MAX_NESTING)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"malformed message: not JSON ({exc})") from None
    except MessageError as exc:
        raise MessageError(f"malformed message: {exc}") from None
    if type(data) is not dict:
        raise MessageError("malformed message: not a JSON object")
    values: list[Any] = [data.get(name) for name in _NAMES]  # a newer producer's fields and
    for index, default in _NULL_DEFAULTS:  # `body` are not among them
        if values[index] is None:
            values[index] = default()
    for value, types in zip(values, _TYPES, strict=True):
        if type(value) not in types:
            raise _first_wrong(values)
    message = Message(*values)
    if not (message.id and message.task and message.v >= 1 and message.retries >= 0):
        _refuse(message)
    if message.priority is not None and not 0 <= message.priority <= 9:
        raise MessageError(f"malformed message: priority {message.priority!r} is not 0-9")
    for name, place in (("group_index", message.group_index), ("group_size", message.group_size)):
        if place is not None and place < 0:
            raise MessageError(f"malformed message: {name} {place!r} is negative")
    if message.chain or message.chord is not None or message.callbacks or message.errbacks:
        _check_workflow(message)
    serializer = check_accepted(message.content_type, accept_content)
    if message.content_type != JSON or message.compression is not None:
        payload = _body(data)
        if message.compression is not None:
            payload = decompress(message.compression, payload, max_bytes)
        message.args, message.kwargs = _decode_body(payload, serializer.loads)
    return message


def _first_wrong(values: list[Any]) -> MessageError:
    name, value = next(
        (name, value)
        for name, value, types in zip(_NAMES, values, _TYPES, strict=True)
        if type(value) not in types
    )
    return _wrong(name, value)


def _wrong(name: str, value: Any) -> MessageError:
    if name == "v" and (value is None or type(value) is int):
        return MessageError(f"malformed message: bad envelope version {value!r}")
    if value is None:
        return MessageError(f"malformed message: missing {name!r}")
    return MessageError(f"malformed message: {name!r} is not {_DESCRIBED[name]}")


def _refuse(message: Message) -> None:
    for name, value in (("id", message.id), ("task", message.task)):
        if not value:
            raise MessageError(f"malformed message: empty {name!r}")
    if message.v < 1:
        raise _wrong("v", message.v)
    raise MessageError("malformed message: retries is negative")


def _check_workflow(message: Message) -> None:
    """The elements a worker launches or fails when this task ends must be launchable."""
    if message.chain:
        check_elements(message.chain, "chain")
    if message.callbacks:
        check_elements(message.callbacks, "callbacks", frozen=False)
    if message.errbacks:
        check_elements(message.errbacks, "errbacks", frozen=False)
    if message.chord is not None:
        check_element(message.chord, "chord")


def _body(data: dict[str, Any]) -> bytes:
    body = data.get("body")
    if not isinstance(body, str):
        raise MessageError("malformed message: body is missing")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageError(f"malformed message: body is not base64 ({exc})") from None


def _decode_body(payload: bytes, loads: Any) -> tuple[list[Any], dict[str, Any]]:
    try:
        args, kwargs = loads(payload)
    except (ValueError, TypeError) as exc:
        raise MessageError(f"malformed message: body does not decode ({exc})") from None
    except Exception as exc:  # a deserializer may raise anything on garbage
        raise MessageError(f"malformed message: body does not decode ({exc!r})") from None
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise MessageError("malformed message: body is not [args, kwargs]")
    try:
        typed_json.check_depth([args, kwargs], defaults.MAX_NESTING)
    except MessageError as exc:
        raise MessageError(f"malformed message: body {exc}") from None
    return list(args), kwargs
