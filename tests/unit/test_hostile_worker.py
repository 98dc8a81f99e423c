"""The worker's side of hostile input (Hypothesis): envelopes that decode — so they reach
the guard and the pipeline — with odd values in every field (ids, lineage, group places,
priorities, times in the past, time limits of a nanosecond or negative, any headers, any
arguments, unknown tasks). Whatever they hold, an in-process worker on the memory broker
settles every one (a state or a dead letter), its queue drains, and it keeps running."""

from __future__ import annotations

import time
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import eventually

from taskq import TaskQ
from taskq.message import Message, peek_id
from taskq.stores.base import ResultStore
from taskq.testing import memory_app, running_worker

QUEUE = "default"
SETTLED = {"SUCCESS", "FAILURE", "REVOKED"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
times = st.none() | st.floats(-1e12, time.time() - 1) | st.sampled_from([0.0, -1.0, 1e-9])
limits = st.none() | st.sampled_from([1e-9, 0.0, -5.0, 1e9]) | st.floats(1e-6, 5)
ids = st.text(min_size=1, max_size=40)
header_values = st.dictionaries(
    st.sampled_from(["idempotency_key", "traceparent", "beat", "retry_of", "x"]),
    json_values,
    max_size=3,
)


@st.composite
def messages(draw: st.DrawFn, index: int = 0) -> Message:
    return Message(
        id=f"{index}-{draw(ids)}",
        task=draw(st.sampled_from(["hostile.echo", "hostile.boom", "hostile.nope"])),
        args=draw(st.lists(json_values, max_size=3)),
        kwargs=draw(
            st.dictionaries(st.sampled_from(["a", "b", "self", "x"]), json_values, max_size=2)
        ),
        priority=draw(st.none() | st.integers(0, 9)),
        eta=draw(times),
        expires=draw(st.none() | st.floats(-1e12, 1e12)),
        retries=draw(st.integers(0, 2**62)),
        root_id=draw(st.none() | ids),
        parent_id=draw(st.none() | ids),
        group_id=draw(st.none() | ids),
        group_index=draw(st.none() | st.integers(0, 2**62)),
        group_size=draw(st.none() | st.integers(0, 2**62)),
        headers=draw(header_values),
        sent_at=draw(st.floats(-1e12, 1e12)),
        time_limit=draw(limits),
        soft_time_limit=draw(limits),
        ignore_result=draw(st.none() | st.booleans()),
    )


def hostile_app() -> TaskQ:
    app = memory_app("hostile", broker_transport_options={"polling_interval": 0.01})

    @app.task(name="hostile.echo")
    async def echo(*args: Any, **kwargs: Any) -> list[Any]:
        return [args, kwargs]

    @app.task(name="hostile.boom")
    async def boom(*args: Any, **kwargs: Any) -> None:
        raise ValueError("boom")

    return app


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(st.lists(messages(), min_size=1, max_size=25, unique_by=lambda m: m.id))
def test_a_worker_settles_whatever_decodes(batch: list[Message]) -> None:
    anyio.run(_settles, batch)


async def _settles(batch: list[Message]) -> None:
    app = hostile_app()
    async with app, running_worker(app, concurrency=10) as worker:
        broker, store = await app.connected_broker(), await app.connected_store()
        await broker.publish_many([(message, QUEUE) for message in batch])

        async def drained() -> bool:
            return await broker.queue_length(QUEUE) == 0

        await eventually(drained)
        letters = await broker.dead_letters(QUEUE, limit=1000)
        assert all(letter.reason for letter in letters)
        buried = {peek_id(letter.body) for letter in letters}

        async def all_settled() -> bool:  # a state is written after its message is settled
            return all([await _settled(store, message, buried) for message in batch])

        await eventually(all_settled)
        assert worker.consuming


async def _settled(store: ResultStore, message: Message, buried: set[str | None]) -> bool:
    if message.id in buried or message.ignore_result:
        return True
    meta = await store.get(message.id)
    return meta is not None and meta.status in SETTLED
