"""A batch of task events as a reader unpacks it: Celery's dicts from the rows, and a payload
that is not a batch skipped with a warning, its good rows kept."""

from __future__ import annotations

import logging

import orjson
import pytest

from taskq.events import FIELDS, RECEIVED, STARTED, SUCCEEDED, _events, encode_batch


def test_rows_become_celerys_events_with_the_batch_fields_and_a_clock_each() -> None:
    received = ("task-received", "t1", 10.0, "add", "[1, 2]", "{}", 0, None, None, "t1", None)
    payload = encode_batch(
        "w@h",
        42,
        7,
        [(*received, "q", 9.5), (STARTED, "t1", 10.5), (SUCCEEDED, "t1", 11.0, "3", 0.5)],
    )
    got = _events(payload, None, None)
    common = [(e["type"], e["uuid"], e["hostname"], e["pid"], e["clock"]) for e in got]
    assert common == [
        (RECEIVED, "t1", "w@h", 42, 7),
        (STARTED, "t1", "w@h", 42, 8),
        (SUCCEEDED, "t1", "w@h", 42, 9),
    ]
    assert {k: got[0][k] for k in FIELDS[RECEIVED]}["queue"] == "q"
    assert (got[2]["result"], got[2]["runtime"], got[2]["timestamp"]) == ("3", 0.5, 11.0)


def test_only_the_types_and_task_asked_for() -> None:
    rows = [(STARTED, "t1", 1.0), (STARTED, "t2", 1.0), (SUCCEEDED, "t2", 2.0, "None", 1.0)]
    payload = encode_batch("w", 1, 1, rows)
    assert [e["clock"] for e in _events(payload, frozenset({STARTED}), "t2")] == [2]


def test_a_greeting_is_no_batch() -> None:
    assert _events(orjson.dumps({"listening": "x"}), None, None) == []


@pytest.mark.parametrize(
    ("payload", "kept"),
    [
        (b"not json", 0),
        (orjson.dumps({"events": "nope", "clock": 1}), 0),
        (encode_batch("w", 1, 1, [("task-unheard-of", "t", 1.0), (STARTED, "t", 1.0)]), 1),
        (encode_batch("w", 1, 1, [(SUCCEEDED, "t", 1.0), [[]], (STARTED, "t", 1.0)]), 1),
    ],
)
def test_what_is_malformed_is_skipped_with_a_warning(
    payload: bytes, kept: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskq.events"):
        assert len(_events(payload, None, None)) == kept
    [record] = caplog.records
    assert "malformed" in record.getMessage()
