"""Rows written straight into the SQLite broker's `taskq_messages` (see taskq/brokers/
sqlite.py) with values of the wrong type: SQLite keeps a TEXT or BLOB in an INTEGER or REAL
column, and a number or TEXT in the BLOB column, as they are."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from chaos.garbage.envelopes import base_envelope, serialized
from chaos.garbage.inputs import Input, mark_of

Row = tuple[object, object, object, object]  # queue, priority, available_at, body
# kind -> (priority, available_at, body) from the envelope's bytes and the time now;
# anonymous when the body cannot carry the mark.
ROW_KINDS: dict[str, tuple[Callable[[bytes, float], tuple[object, object, object]], bool]] = {
    "TEXT priority": (lambda body, now: ("high", now, body), False),
    "BLOB priority": (lambda body, now: (b"\x01", now, body), False),
    "REAL priority": (lambda body, now: (2.5, now, body), False),
    "TEXT available_at": (lambda body, now: (0, "soon", body), False),
    "BLOB available_at": (lambda body, now: (0, b"\x00", body), False),
    "TEXT body (the envelope)": (lambda body, now: (0, now, body.decode()), False),
    "TEXT body (not JSON)": (lambda body, now: (0, now, "not json " + body.decode()), False),
    "INTEGER body": (lambda body, now: (0, now, 42), True),
    "REAL body": (lambda body, now: (0, now, 1.5), True),
}


def row_garbage(
    queue: str, per_kind: int, token: str, rng: random.Random
) -> tuple[list[Input], list[Row]]:
    inputs: list[Input] = []
    rows: list[Row] = []
    now = time.time()
    for round_ in range(per_kind):
        for index, (kind, (values, anonymous)) in enumerate(ROW_KINDS.items()):
            mark = mark_of(round_ * len(ROW_KINDS) + index, token)
            envelope = serialized(base_envelope(mark, queue, rng))
            priority, available_at, body = values(envelope, now)
            rows.append((queue, priority, available_at, body))
            inputs.append(Input(kind, envelope, mark, None if anonymous else mark, anonymous))
    return inputs, rows
