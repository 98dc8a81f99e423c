"""Signing envelopes (taskq.signing) and its settings, without a broker."""

from __future__ import annotations

import pytest

from taskq import TaskQ
from taskq.errors import ConfigurationError, SignatureError
from taskq.message import Message, decode, encode
from taskq.signing import Signing

KEY = b"k" * 32
OTHER = b"o" * 32


def signed(signing: Signing, **fields: object) -> bytes:
    return encode(Message(id="t1", task="t.add", args=[1, 2], **fields), signing=signing)  # type: ignore[arg-type]


def test_a_signed_envelope_verifies_to_the_bytes_that_decode() -> None:
    signing = Signing([KEY])
    raw = signed(signing)
    assert raw.endswith(b'"}') and b'"signature":"' in raw
    message = decode(signing.verified(raw), ["json"])
    assert (message.id, message.args) == ("t1", [1, 2])


def test_a_worker_without_a_key_reads_a_signed_envelope() -> None:
    assert decode(signed(Signing([KEY])), ["json"]).args == [1, 2]


def another_last_digit(raw: bytes) -> bytes:
    """`raw` with the signature's last hex digit changed."""
    return raw[:-3] + (b"1" if raw[-3:-2] == b"0" else b"0") + b'"}'


@pytest.mark.parametrize(
    "raw",
    [
        signed(Signing([KEY])).replace(b"[1,2]", b"[1,3]"),  # tampered
        signed(Signing([OTHER])),  # another key
        another_last_digit(signed(Signing([KEY]))),
    ],
)
def test_what_does_not_verify_is_a_signature_error(raw: bytes) -> None:
    with pytest.raises(SignatureError, match="bad signature: it does not verify with any key"):
        Signing([KEY]).verified(raw)


def test_unsigned_is_refused_only_when_required() -> None:
    raw = encode(Message(id="t1", task="t.add"))
    with pytest.raises(SignatureError, match="bad signature: the message is not signed"):
        Signing([KEY]).verified(raw)
    assert Signing([KEY], required=False).verified(raw) == raw
    with pytest.raises(SignatureError):  # a bad signature is refused even then
        Signing([KEY], required=False).verified(signed(Signing([OTHER])))


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    rotated = Signing([OTHER, KEY])
    assert rotated.verified(signed(Signing([KEY])))  # old producers still verify
    Signing([OTHER]).verified(signed(rotated))  # the new key signs
    with pytest.raises(SignatureError):
        Signing([KEY]).verified(signed(rotated))


def test_settings_build_the_signing_and_never_show_the_key() -> None:
    app = TaskQ("t", broker="memory://signing", message_signing_key=KEY.decode())
    signing = app.conf.signing()
    assert signing is not None and signing.required
    assert KEY.decode() not in repr(app.conf) and KEY.decode() not in repr(signing)
    app.conf.message_signing_required = False
    assert app.conf.signing() is not None and not app.conf.signing().required  # type: ignore[union-attr]


def test_a_key_list_comes_from_the_environment_as_json() -> None:
    app = TaskQ("t", broker="memory://signing")
    app.conf.apply_environment(
        {"TASKQ_MESSAGE_SIGNING_KEY": f'["{OTHER.decode()}", "{KEY.decode()}"]'}
    )
    assert app.conf.message_signing_key == [OTHER.decode(), KEY.decode()]
    app.conf.apply_environment({"TASKQ_MESSAGE_SIGNING_KEY": KEY.decode()})
    assert app.conf.message_signing_key == KEY.decode()


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"message_signing_key": "short"}, "is 5 bytes: use at least 16"),
        ({"message_signing_key": []}, "a non-empty list of keys"),
        ({"message_signing_key": [KEY, 3]}, r"message_signing_key\[1\] must be str or bytes"),
        ({"message_signing_required": True}, "message_signing_key is not"),
        ({"message_signing_key": KEY, "message_signing_required": "yes"}, "True, False or None"),
    ],
)
def test_bad_signing_settings_are_one_line_errors(settings: dict[str, object], error: str) -> None:
    app = TaskQ("t", broker="memory://signing", **settings)
    with pytest.raises(ConfigurationError, match=error):
        app.conf.validate()
