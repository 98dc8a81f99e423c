"""The message envelope: one JSON object per task.

Field names are the contract between producers and workers of different versions:
add fields, never repurpose them. Unknown fields are ignored on decode.

Arguments are JSON values inside the envelope. With another serializer (msgpack,
pickle) the envelope stays JSON and carries `content_type` plus `body`, the
base64 text of the serialized `[args, kwargs]`, so that a worker can refuse the
content type before it deserializes anything.

Imports nothing of taskq but `errors`, `serializers` and `elements`.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from taskq.elements import check_element, check_elements
from taskq.errors import MessageError, MessageTooLargeError
from taskq.serializers import check_accepted, get_serializer

ENVELOPE_VERSION = 1
JSON = "json"

SignatureDict = dict[str, Any]


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Message:
    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int | None = None
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    group_size: int | None = None
    chain: list[SignatureDict] = field(default_factory=list)
    chord: SignatureDict | None = None
    callbacks: list[SignatureDict] = field(default_factory=list)
    errbacks: list[SignatureDict] = field(default_factory=list)
    headers: dict[str, Any] = field(default_factory=dict)
    sent_at: float = field(default_factory=time.time)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    exchange: str | None = None
    routing_key: str | None = None
    ignore_result: bool | None = None
    content_type: str = JSON
    v: int = ENVELOPE_VERSION


_NONE: type = type(None)
_STRING: frozenset[type] = frozenset({str})
_INTEGER: frozenset[type] = frozenset({int})
_NUMBER: frozenset[type] = frozenset({int, float, _NONE})  # by exact type: true is not a number
_OPTIONAL_STRING: frozenset[type] = frozenset({str, _NONE})
_OPTIONAL_INTEGER: frozenset[type] = frozenset({int, _NONE})
_OPTIONAL_LIST: frozenset[type] = frozenset({list, _NONE})
_OPTIONAL_DICT: frozenset[type] = frozenset({dict, _NONE})

# The JSON types each envelope field may have, and how an error names them.
_SHAPES: dict[str, tuple[frozenset[type], str]] = {
    "v": (_INTEGER, "an integer"),
    "id": (_STRING, "a string"),
    "task": (_STRING, "a string"),
    "args": (_OPTIONAL_LIST, "a list"),
    "kwargs": (_OPTIONAL_DICT, "a dict"),
    "queue": (_OPTIONAL_STRING, "a string"),
    "priority": (_OPTIONAL_INTEGER, "an integer 0-9"),
    "eta": (_NUMBER, "a number"),
    "expires": (_NUMBER, "a number"),
    "retries": (_INTEGER, "an integer"),
    "root_id": (_OPTIONAL_STRING, "a string"),
    "parent_id": (_OPTIONAL_STRING, "a string"),
    "group_id": (_OPTIONAL_STRING, "a string"),
    "group_index": (_OPTIONAL_INTEGER, "an integer"),
    "group_size": (_OPTIONAL_INTEGER, "an integer"),
    "chain": (_OPTIONAL_LIST, "a list"),
    "chord": (_OPTIONAL_DICT, "a signature"),
    "callbacks": (_OPTIONAL_LIST, "a list"),
    "errbacks": (_OPTIONAL_LIST, "a list"),
    "headers": (_OPTIONAL_DICT, "a dict"),
    "sent_at": (_NUMBER, "a number"),
    "time_limit": (_NUMBER, "a number"),
    "soft_time_limit": (_NUMBER, "a number"),
    "exchange": (_OPTIONAL_STRING, "a string"),
    "routing_key": (_OPTIONAL_STRING, "a string"),
    "ignore_result": (frozenset({bool, _NONE}), "true, false or null"),
    "content_type": (_STRING, "a string"),
}
_TYPES: dict[str, frozenset[type]] = {name: types for name, (types, _) in _SHAPES.items()}


def encode(message: Message, max_bytes: int | None = None) -> bytes:
    """The envelope's bytes; `MessageTooLargeError` past `max_bytes`."""
    data: dict[str, Any] = {
        "v": message.v,
        "id": message.id,
        "task": message.task,
        "args": message.args,
        "kwargs": message.kwargs,
        "queue": message.queue,
        "priority": message.priority,
        "eta": message.eta,
        "expires": message.expires,
        "retries": message.retries,
        "root_id": message.root_id,
        "parent_id": message.parent_id,
        "group_id": message.group_id,
        "group_index": message.group_index,
        "group_size": message.group_size,
        "chain": message.chain,
        "chord": message.chord,
        "callbacks": message.callbacks,
        "errbacks": message.errbacks,
        "headers": message.headers,
        "sent_at": message.sent_at,
        "time_limit": message.time_limit,
        "soft_time_limit": message.soft_time_limit,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "ignore_result": message.ignore_result,
    }
    if message.content_type != JSON:
        serializer = get_serializer(message.content_type)
        payload = serializer.dumps([message.args, message.kwargs])
        data["args"], data["kwargs"] = [], {}
        data["content_type"] = message.content_type
        data["body"] = base64.b64encode(payload).decode("ascii")
    try:
        raw = orjson.dumps(data)
    except TypeError as exc:
        raise MessageError(f"task {message.task!r}: arguments are not serializable: {exc}") from exc
    if max_bytes is not None and len(raw) > max_bytes:
        raise MessageTooLargeError(
            f"task {message.task!r}: message is {len(raw)} bytes, over the limit of "
            f"{max_bytes} (task_max_message_bytes)"
        )
    return raw


def peek_id(raw: bytes) -> str | None:
    """The task id of a message that may not decode, for recording its failure."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    task_id = data.get("id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def decode(raw: bytes, accept_content: frozenset[str] | set[str] | list[str]) -> Message:
    """Parse and validate an envelope; `MessageError` (or `ContentRefusedError`) says why not."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"malformed message: not JSON ({exc})") from None
    if type(data) is not dict:
        raise MessageError("malformed message: not a JSON object")
    for name, value in data.items():
        types = _TYPES.get(name)
        if types is not None and type(value) not in types:
            raise MessageError(f"malformed message: {name!r} is not {_SHAPES[name][1]}")
    get = data.get
    version = get("v")
    if version is None or version < 1:
        raise MessageError(f"malformed message: bad envelope version {version!r}")
    task_id, task = _required(data, "id"), _required(data, "task")
    priority = get("priority")
    if priority is not None and not 0 <= priority <= 9:
        raise MessageError(f"malformed message: priority {priority!r} is not 0-9")
    retries = get("retries", 0)
    if retries < 0:
        raise MessageError("malformed message: retries is negative")
    _check_workflow(data)
    content_type = get("content_type", JSON)
    serializer = check_accepted(content_type, accept_content)
    if content_type == JSON:
        args, kwargs = get("args") or [], get("kwargs") or {}
    else:
        args, kwargs = _decode_body(data, serializer.loads)
    return Message(
        task_id,
        task,
        args,
        kwargs,
        get("queue") or "default",
        priority,
        get("eta"),
        get("expires"),
        retries,
        get("root_id"),
        get("parent_id"),
        get("group_id"),
        get("group_index"),
        get("group_size"),
        get("chain") or [],
        get("chord"),
        get("callbacks") or [],
        get("errbacks") or [],
        get("headers") or {},
        get("sent_at") or 0.0,
        get("time_limit"),
        get("soft_time_limit"),
        get("exchange"),
        get("routing_key"),
        get("ignore_result"),
        content_type,
        version,
    )


def _check_workflow(data: dict[str, Any]) -> None:
    """The elements a worker launches or fails when this task ends must be launchable."""
    if data.get("chain"):
        check_elements(data["chain"], "chain")
    for name in ("callbacks", "errbacks"):
        if data.get(name):
            check_elements(data[name], name, frozen=False)
    if data.get("chord") is not None:
        check_element(data["chord"], "chord")


def _required(data: dict[str, Any], name: str) -> str:
    value: str | None = data.get(name)
    if not value:
        raise MessageError(f"malformed message: {'missing' if value is None else 'empty'} {name!r}")
    return value


def _decode_body(data: dict[str, Any], loads: Any) -> tuple[list[Any], dict[str, Any]]:
    body = data.get("body")
    if not isinstance(body, str):
        raise MessageError("malformed message: body is missing")
    try:
        args, kwargs = loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MessageError(f"malformed message: body does not decode ({exc})") from None
    except Exception as exc:  # a deserializer may raise anything on garbage
        raise MessageError(f"malformed message: body does not decode ({exc!r})") from None
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise MessageError("malformed message: body is not [args, kwargs]")
    return list(args), kwargs
