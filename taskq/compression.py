"""Compression of a message's arguments (`task_compression`, a call's `compression=`).

gzip only: the standard library has it, and Celery's configs name it (`zlib` is kombu's name
for the same). The envelope stays JSON; its `body` carries the compressed `[args, kwargs]`.
Decompression stops at a bound, so a small message cannot inflate into a huge one.

Imports nothing of taskq but `errors`.
"""

from __future__ import annotations

import zlib

from taskq.errors import ConfigurationError, MessageError

GZIP = "gzip"
_NAMES = {GZIP: GZIP, "zlib": GZIP}
_GZIP_WBITS = 31  # zlib's window bits for the gzip container
_ANY_WBITS = 47  # gzip or zlib, detected from the header
_LEVEL = 6  # zlib's default: most of level 9's ratio at a fraction of its time


def compression_name(name: str) -> str:
    """The compression `name` stands for; a `ConfigurationError` for one taskq lacks."""
    try:
        return _NAMES[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown compression {name!r}: taskq compresses with gzip ('gzip' or 'zlib')"
        ) from None


def compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def decompress(name: str, data: bytes, limit: int) -> bytes:
    """`data` decompressed; a `MessageError` if it is not `name`'s or comes to over `limit`."""
    if _NAMES.get(name) != GZIP:
        raise MessageError(f"malformed message: unknown compression {name!r}")
    inflater = zlib.decompressobj(_ANY_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MessageError(f"malformed message: body does not decompress ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise MessageError(
            f"malformed message: body decompresses to over {limit} bytes (task_max_message_bytes)"
        )
    if not inflater.eof:
        raise MessageError("malformed message: compressed body is cut short")
    return out
