"""The message envelope: one JSON object per task.

Field names are the contract between producers and workers of different versions:
add fields, never repurpose them. Unknown fields are ignored on decode.

Arguments are JSON values inside the envelope. With another serializer (msgpack,
pickle) the envelope stays JSON and carries `content_type` plus `body`, the
base64 text of the serialized `[args, kwargs]`, so that a worker can refuse the
content type before it deserializes anything.

Imports nothing of taskq but `errors` and `serializers`.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    content_type: str = JSON
    v: int = ENVELOPE_VERSION


_OPTIONAL_NUMBERS = ("eta", "expires", "sent_at", "time_limit", "soft_time_limit")
_OPTIONAL_STRINGS = ("root_id", "parent_id", "group_id", "exchange", "routing_key")


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
    if not isinstance(data, dict):
        raise MessageError("malformed message: not a JSON object")
    version = data.get("v")
    if not isinstance(version, int) or version < 1:
        raise MessageError(f"malformed message: bad envelope version {version!r}")
    task_id = _field(data, "id", str, required=True)
    task = _field(data, "task", str, required=True)
    if not task_id or not task:
        raise MessageError("malformed message: empty id or task name")
    content_type = data.get("content_type", JSON)
    if not isinstance(content_type, str):
        raise MessageError("malformed message: content_type is not a string")
    serializer = check_accepted(content_type, accept_content)
    if content_type == JSON:
        args = _field(data, "args", list)
        kwargs = _field(data, "kwargs", dict)
    else:
        args, kwargs = _decode_body(data, serializer.loads)
    priority = data.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 9):
        raise MessageError(f"malformed message: priority {priority!r} is not 0-9")
    for name in _OPTIONAL_NUMBERS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise MessageError(f"malformed message: {name} is not a number")
    for name in _OPTIONAL_STRINGS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise MessageError(f"malformed message: {name} is not a string")
    retries = data.get("retries", 0)
    if type(retries) is not int or retries < 0:
        raise MessageError("malformed message: retries is not a non-negative integer")
    group_index, group_size = data.get("group_index"), data.get("group_size")
    if any(value is not None and type(value) is not int for value in (group_index, group_size)):
        raise MessageError("malformed message: group_index or group_size is not an integer")
    chord = data.get("chord")
    if chord is not None and not isinstance(chord, dict):
        raise MessageError("malformed message: chord is not a signature")
    return Message(
        id=task_id,
        task=task,
        args=args,
        kwargs=kwargs,
        queue=_field(data, "queue", str) or "default",
        priority=priority,
        eta=data.get("eta"),
        expires=data.get("expires"),
        retries=retries,
        root_id=data.get("root_id"),
        parent_id=data.get("parent_id"),
        group_id=data.get("group_id"),
        group_index=group_index,
        group_size=group_size,
        chain=_field(data, "chain", list),
        chord=chord,
        callbacks=_field(data, "callbacks", list),
        errbacks=_field(data, "errbacks", list),
        headers=_field(data, "headers", dict),
        sent_at=data.get("sent_at") or 0.0,
        time_limit=data.get("time_limit"),
        soft_time_limit=data.get("soft_time_limit"),
        exchange=data.get("exchange"),
        routing_key=data.get("routing_key"),
        content_type=content_type,
        v=version,
    )


def _field(data: dict[str, Any], name: str, kind: type, required: bool = False) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise MessageError(f"malformed message: missing {name!r}")
        return kind()
    if not isinstance(value, kind):
        raise MessageError(f"malformed message: {name!r} is not a {kind.__name__}")
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
