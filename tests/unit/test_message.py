"""The envelope: encode/decode round trips, and every kind of garbage refused with a reason."""

import base64
import gzip
import pickle
import re

import orjson
import pytest

from taskq.errors import ContentRefusedError, MessageError, MessageTooLargeError
from taskq.message import Message, decode, encode, peek_id

ACCEPT_JSON = {"json"}


def make(**fields: object) -> Message:
    return Message(id="abc", task="shop.add", args=[1, 2], kwargs={"z": 3}, **fields)  # type: ignore[arg-type]


def signature(task: str, **options: object) -> dict[str, object]:
    """A frozen task signature, as canvas puts it in an envelope (`task_id=None`: unfrozen)."""
    frozen = {"task_id": f"{task}-id", **options}
    return {
        "task": task,
        "args": [],
        "kwargs": {},
        "options": {key: value for key, value in frozen.items() if value is not None},
        "immutable": False,
    }


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
        chain=[signature("t")],
        chord=signature("cb"),
        callbacks=[signature("ok", task_id=None)],
        errbacks=[signature("err", task_id=None)],
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


GROUP = {"task": "taskq.group", "args": [], "kwargs": {"tasks": [signature("m")]},
         "options": {"group_id": "g"}, "immutable": False, "subtask_type": "group"}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"chain": [{"task": "t"}]}, "chain[0] has no 'options' dict"),
        ({"chain": ["t"]}, "chain[0] is not a signature"),
        ({"chain": [{**signature("t"), "options": {}}]}, "chain[0] has no 'task_id' (str)"),
        ({"chain": [{**signature("t"), "args": "x"}]}, "chain[0] has no 'args' (list)"),
        ({"chain": [{**signature("t"), "task": ""}]}, "chain[0] has an empty 'task'"),
        ({"chain": [signature("t", countdown="soon")]}, "chain[0].options.countdown is a str"),
        ({"chain": [signature("t", priority=12)]}, "chain[0].options.priority is not 0-9"),
        ({"chord": {**GROUP, "options": {}}}, "chord has no 'group_id' (str)"),
        (
            {"chord": {**signature("c"), "subtask_type": "loop"}},
            "chord has an unknown subtask_type 'loop'",
        ),
        ({"chord": {**signature("c"), "subtask_type": "chain"}}, "chord.tasks is not a list"),
        (
            {"chord": {**GROUP, "subtask_type": "chord", "kwargs": {"header": signature("h")}}},
            "chord.header is not a group",
        ),
        ({"callbacks": [{"task": "ok", "args": []}]}, "callbacks[0] has no 'options' dict"),
        (
            {"errbacks": [signature("e", task_id=None, link=[1])]},
            "errbacks[0].options.link[0] is not a signature",
        ),
        (
            {"chord": signature("c", membership={"group_id": "g", "index": "0", "size": 2})},
            "chord.options.membership has no 'index' (int)",
        ),
    ],
)
def test_workflow_fields_that_could_not_be_advanced_are_refused(
    fields: dict[str, object], reason: str
) -> None:
    """A worker refuses them before the task runs: found after it, the task's message could
    never be settled (acks_late) or its next workflow step was silently lost."""
    data = {**orjson.loads(encode(make())), **fields}
    with pytest.raises(MessageError, match="malformed message: " + re.escape(reason)):
        decode(orjson.dumps(data), ACCEPT_JSON)


def test_gzip_compresses_the_arguments_and_round_trips() -> None:
    message = Message(id="a", task="t", args=["x" * 100_000], kwargs={"n": 1}, compression="gzip")
    raw = encode(message)
    assert len(raw) < 2_000  # 100 kB of one letter squeezes to almost nothing
    data = orjson.loads(raw)
    assert data["compression"] == "gzip" and data["args"] == [] and "body" in data
    assert decode(raw, ACCEPT_JSON) == message
    msgpack = Message(id="b", task="t", args=[1], content_type="msgpack", compression="zlib")
    assert decode(encode(msgpack), {"msgpack"}).args == [1]


def _with_body(compression: str, payload: bytes) -> bytes:
    data = orjson.loads(encode(make(compression="gzip")))
    data["compression"] = compression
    data["body"] = base64.b64encode(payload).decode()
    return orjson.dumps(data)


def test_a_compressed_body_may_not_inflate_past_the_limit() -> None:
    bomb = gzip.compress(b"[[" + b" " * 50_000_000 + b"],{}]")  # 50 MB of spaces in 50 kB
    assert len(bomb) < 100_000
    with pytest.raises(MessageError, match="decompresses to over 100000 bytes"):
        decode(_with_body("gzip", bomb), ACCEPT_JSON, max_bytes=100_000)
    with pytest.raises(MessageError, match="decompresses to over 4194304 bytes"):
        decode(_with_body("gzip", bomb), ACCEPT_JSON)
    big = Message(id="a", task="t", args=["x" * 5000], compression="gzip")
    with pytest.raises(MessageTooLargeError, match="arguments before compression is 5"):
        encode(big, max_bytes=1000)


@pytest.mark.parametrize(
    ("compression", "payload", "reason"),
    [
        ("zstd", gzip.compress(b"[[],{}]"), "unknown compression 'zstd'"),
        ("gzip", b"not gzip at all", "body does not decompress"),
        ("gzip", gzip.compress(b"[[1],{}]")[:-12], "compressed body is cut short"),
        ("gzip", gzip.compress(b"not json"), "body does not decode"),
    ],
)
def test_bad_compressed_bodies_are_refused(compression: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode(_with_body(compression, payload), ACCEPT_JSON)
