"""Serializers for task arguments and results: json (orjson, with `typed_json`'s tagged
values), msgpack, pickle (opt-in).

Imports nothing of taskq but `errors` and `typed_json`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from taskq import typed_json
from taskq.errors import ConfigurationError, ContentRefusedError


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_dumps(value: Any) -> bytes:
    return typed_json.dumps(value, orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "the msgpack serializer needs the msgpack package: pip install 'taskq[msgpack]'"
        ) from exc
    return msgpack


def _msgpack_dumps(value: Any) -> bytes:
    data: bytes = _msgpack().packb(value, use_bin_type=True)
    return data


def _msgpack_loads(data: bytes) -> Any:
    return _msgpack().unpackb(data, raw=False)


def _pickle_dumps(value: Any) -> bytes:
    import pickle  # only for an app that opted into pickle

    return pickle.dumps(value)


def _pickle_loads(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)


SERIALIZERS: dict[str, Serializer] = {
    "json": Serializer("json", _json_dumps, typed_json.loads),
    "msgpack": Serializer("msgpack", _msgpack_dumps, _msgpack_loads),
    "pickle": Serializer("pickle", _pickle_dumps, _pickle_loads),
}


PICKLE_RISK = (
    "accept_content includes 'pickle': a pickled message runs whatever code its sender put in"
    " it, so anyone who can write to the broker can run code on this worker; accept pickle"
    " only from a broker nobody else can write to, with message_signing_key (docs/security.md)"
)


def get_serializer(name: str) -> Serializer:
    try:
        return SERIALIZERS[name]
    except KeyError:
        known = ", ".join(sorted(SERIALIZERS))
        raise ConfigurationError(f"unknown serializer {name!r} (known: {known})") from None


def check_accepted(name: str, accept_content: frozenset[str] | set[str] | list[str]) -> Serializer:
    """The serializer `name`, or `ContentRefusedError` when the app does not accept it."""
    if name not in accept_content:
        raise ContentRefusedError(
            f"content type {name!r} refused (accept_content={sorted(accept_content)})"
        )
    return get_serializer(name)
