"""The envelope: encode/decode round trips, and every kind of garbage refused with a reason."""

import base64
import pickle

import orjson
import pytest

from taskq.errors import ContentRefusedError, MessageError, MessageTooLargeError
from taskq.message import Message, decode, encode, peek_id

ACCEPT_JSON = {"json"}


def make(**fields: object) -> Message:
    return Message(id="abc", task="shop.add", args=[1, 2], kwargs={"z": 3}, **fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    message = make(
        queue="images",
        priority=7,
        eta=1700000000.5,
        expires=1700003600.0,
        retries=2,
        root_id="root",
        parent_id="parent",
        group_id="g",
        group_index=3,
        chain=[{"task": "t", "args": [], "kwargs": {}, "options": {}, "immutable": False}],
        chord={"task": "cb", "args": [], "kwargs": {}, "options": {}, "immutable": False},
        callbacks=[{"task": "ok"}],
        errbacks=[{"task": "err"}],
        headers={"trace": "x"},
    )
    assert decode(encode(message), ACCEPT_JSON) == message


def test_envelope_is_one_json_object_with_the_design_fields() -> None:
    data = orjson.loads(encode(make()))
    assert data["v"] == 1
    assert {"id", "task", "args", "kwargs", "queue", "priority", "eta", "expires", "retries",
            "root_id", "parent_id", "group_id", "group_index", "chain", "chord", "callbacks",
            "errbacks", "headers", "sent_at"} <= set(data)  # fmt: skip


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = orjson.loads(encode(make()))
    data["added_in_v2"] = {"x": 1}
    assert decode(orjson.dumps(data), ACCEPT_JSON).task == "shop.add"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\xffgarbage", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": "a", "task": "t"}', "version"),
        (b'{"v": 1, "task": "t"}', "missing 'id'"),
        (b'{"v": 1, "id": "a"}', "missing 'task'"),
        (b'{"v": 1, "id": "a", "task": ""}', "empty 'task'"),
        (b'{"v": 1, "id": "a", "task": "t", "args": {"x": 1}}', "'args' is not a list"),
        (b'{"v": 1, "id": "a", "task": "t", "kwargs": [1]}', "'kwargs' is not a dict"),
        (b'{"v": 1, "id": "a", "task": "t", "priority": 11}', "priority"),
        (b'{"v": 1, "id": "a", "task": "t", "eta": "soon"}', "'eta' is not a number"),
        (b'{"v": 1, "id": "a", "task": "t", "eta": true}', "'eta' is not a number"),
        (b'{"v": 1, "id": "a", "task": "t", "retries": -1}', "retries"),
        (b'{"v": "1", "id": "a", "task": "t"}', "'v' is not an integer"),
        (b'{"v": 1, "id": 5, "task": "t"}', "'id' is not a string"),
    ],
)
def test_garbage_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode(raw, ACCEPT_JSON)


def test_pickle_is_refused_unless_accepted() -> None:
    raw = encode(make(content_type="pickle"))
    with pytest.raises(ContentRefusedError, match="'pickle' refused"):
        decode(raw, ACCEPT_JSON)
    assert decode(raw, {"json", "pickle"}).args == [1, 2]


def test_refused_content_is_never_deserialized() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('deserialized!')",))

    data = orjson.loads(encode(make()))
    data.update(content_type="pickle", body=base64.b64encode(pickle.dumps([[Boom()], {}])).decode())
    with pytest.raises(ContentRefusedError):
        decode(orjson.dumps(data), ACCEPT_JSON)


def test_msgpack_round_trip() -> None:
    raw = encode(make(content_type="msgpack"))
    assert decode(raw, {"msgpack"}).kwargs == {"z": 3}


def test_bad_body_is_a_message_error() -> None:
    data = orjson.loads(encode(make(content_type="msgpack")))
    data["body"] = "!!!not base64!!!"
    with pytest.raises(MessageError, match="body"):
        decode(orjson.dumps(data), {"msgpack"})


def test_size_limit_refuses_big_messages() -> None:
    big = Message(id="a", task="t", args=["x" * 2000])
    with pytest.raises(MessageTooLargeError, match="over the limit of 1000"):
        encode(big, max_bytes=1000)
    assert len(encode(big, max_bytes=5000)) > 2000


def test_unserializable_arguments_are_a_clear_error() -> None:
    with pytest.raises(MessageError, match="not serializable"):
        encode(Message(id="a", task="t", args=[object()]))


def test_peek_id_finds_the_id_of_a_broken_message() -> None:
    assert peek_id(b'{"id": "x1", "task": 5}') == "x1"
    assert peek_id(b"garbage") is None
    assert peek_id(b"[1]") is None
