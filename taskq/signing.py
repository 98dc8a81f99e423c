"""Signed envelopes: HMAC-SHA256 with the app's `message_signing_key`.

A signed envelope is the envelope as encoded, with one last field, `"signature"`: the hex
HMAC-SHA256 of the bytes without it. So the signature sits at a fixed distance from the end,
and a worker checks it before it parses anything, over exactly the bytes it then decodes;
a worker without a key reads a signed envelope as any other (an unknown field is ignored).

With a list of keys the first signs and every one verifies: rotate by putting the new key
first on every worker, then on the producers, then dropping the old one.

Imports nothing of taskq but `errors`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from taskq.errors import ConfigurationError, SignatureError

_FIELD = b',"signature":"'
_HEX_DIGITS = hashlib.sha256().digest_size * 2
_SUFFIX_SIZE = len(_FIELD) + _HEX_DIGITS + 2  # the closing quote and brace
_END = b'"}'
MIN_KEY_BYTES = 16

Key = str | bytes


class Signing:
    """Signs with the first of `keys`, verifies with any; `required`: an unsigned envelope is
    refused too, not only a badly signed one. Its repr names no key."""

    __slots__ = ("_keyed", "required")

    def __init__(self, keys: Sequence[bytes], required: bool = True) -> None:
        if not keys:
            raise ConfigurationError("message_signing_key: no key given")
        # An HMAC keyed once per key: each message then costs a copy and its own blocks,
        # not the key's two blocks again (a third less than hmac.digest for an envelope).
        self._keyed = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)
        self.required = required

    @classmethod
    def from_setting(
        cls, given: Key | Sequence[Key] | None, required: bool | None
    ) -> Signing | None:
        """The signing `message_signing_key` and `message_signing_required` configure, or None
        when there is no key (and then none may be required)."""
        if required is not None and not isinstance(required, bool):
            raise ConfigurationError(
                f"message_signing_required must be True, False or None, not {required!r}"
            )
        if given is None:
            if required:
                raise ConfigurationError(
                    "message_signing_required is set but message_signing_key is not"
                )
            return None
        given_keys = [given] if isinstance(given, str | bytes) else given
        if not isinstance(given_keys, Sequence) or not given_keys:
            raise ConfigurationError(
                "message_signing_key must be a key (str or bytes) or a non-empty list of keys"
            )
        keys = [_key_bytes(key, index) for index, key in enumerate(given_keys)]
        return cls(keys, required=True if required is None else required)

    def __repr__(self) -> str:
        return f"Signing({len(self._keyed)} key(s), required={self.required})"

    def sign(self, envelope: bytes) -> bytes:
        """`envelope` (a JSON object as `message.encode` writes it) with its signature."""
        return b"".join((envelope[:-1], _FIELD, _hex_hmac(self._keyed[0], envelope), _END))

    def verified(self, raw: bytes) -> bytes:
        """The envelope `raw` carries, its signature checked and taken off; `SignatureError`
        (a `MessageError`: the message is dead-lettered) when it does not verify, or when it
        is unsigned and a signature is required."""
        if not _is_signed(raw):
            if self.required:
                raise SignatureError("bad signature: the message is not signed")
            return raw
        cut = len(raw) - _SUFFIX_SIZE
        envelope = raw[:cut] + b"}"
        given = raw[cut + len(_FIELD) : -len(_END)]
        for keyed in self._keyed:
            if hmac.compare_digest(_hex_hmac(keyed, envelope), given):
                return envelope
        raise SignatureError("bad signature: it does not verify with any key")


def _hex_hmac(keyed: hmac.HMAC, envelope: bytes) -> bytes:
    mac = keyed.copy()
    mac.update(envelope)
    return mac.hexdigest().encode("ascii")


def _is_signed(raw: bytes) -> bool:
    return (
        len(raw) > _SUFFIX_SIZE
        and raw.endswith(_END)
        and raw[-_SUFFIX_SIZE : -_SUFFIX_SIZE + len(_FIELD)] == _FIELD
    )


def _key_bytes(key: object, index: int) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes):
        raise ConfigurationError(
            f"message_signing_key[{index}] must be str or bytes, not {type(key).__name__}"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(
            f"message_signing_key[{index}] is {len(key)} bytes: use at least {MIN_KEY_BYTES}"
            " random bytes (python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key
