"""The result store contract: every store passes this suite.

A new store adds one entry to `STORE_URLS` (a server-backed one can take its
URL from a server fixture through `request.getfixturevalue`); tests that need
several processes on one SQLite file are at the end.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from taskq import states
from taskq.config import Settings
from taskq.errors import TimeoutError
from taskq.stores.base import ResultStore, TaskMeta, create_store

# Long enough that a waiter that returns promptly was woken, not polling.
SLOW_POLLING = Settings(result_backend_transport_options={"polling_interval": 5.0})


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"  # tmp_path is absolute: sqlite:////tmp/...


def redis_url(server_url: str, parameters: str = "") -> str:
    """The server's URL with a key prefix of the test's own."""
    return f"{server_url}?{parameters}prefix=t{uuid.uuid4().hex[:12]}:"


# A fresh, empty store's URL for each test.
STORE_URLS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "memory": lambda request: f"memory://{uuid.uuid4().hex}",
    "sqlite": lambda request: sqlite_url(request.getfixturevalue("tmp_path")),
    "redis": lambda request: redis_url(request.getfixturevalue("redis_server").url),
    # RESP2: a subscribed connection answers nothing else, so `wait()` reads apart.
    "redis-resp2": lambda request: redis_url(
        request.getfixturevalue("redis_server").url, "protocol=2&"
    ),
    "redis-cluster": lambda request: redis_url(
        request.getfixturevalue("redis_cluster").url, "cluster=true&"
    ),
}


@pytest.fixture(params=list(STORE_URLS))
def store_url(request: pytest.FixtureRequest) -> str:
    return STORE_URLS[request.param](request)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[ResultStore]:
    async with connected(store_url) as s:
        yield s


@asynccontextmanager
async def connected(url: str, options: Settings = SLOW_POLLING) -> AsyncIterator[ResultStore]:
    """A store on `url`, connected for the block and closed after it."""
    store = create_store(url, options)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


def new_id() -> str:
    return uuid.uuid4().hex


def success(task_id: str) -> TaskMeta:
    return TaskMeta(task_id, status=states.SUCCESS, result=42, date_done=time.time())


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    """Poll `check` until it is true; fail after `within` seconds."""
    with anyio.fail_after(within):
        while True:
            if await check():
                return
            await anyio.sleep(0.01)


# --- states -----------------------------------------------------------------


async def test_set_get_round_trips_every_field(store: ResultStore) -> None:
    meta = TaskMeta(
        task_id=new_id(),
        status=states.FAILURE,
        result={"nested": [1, 2.5, "three", None, True]},
        exc_type="ValueError",
        exc_message="bad value",
        traceback="Traceback (most recent call last): ...",
        task="shop.charge",
        retries=3,
        worker="w1@host",
        date_done=1_700_000_000.25,
    )
    await store.set_state(meta.task_id, meta, None)
    assert await store.get(meta.task_id) == meta


async def test_get_many_in_order(store: ResultStore) -> None:
    first, second = success(new_id()), TaskMeta(new_id(), states.FAILURE, exc_type="E")
    await store.set_state(first.task_id, first, None)
    await store.set_state(second.task_id, second, None)
    found = await store.get_many([second.task_id, new_id(), first.task_id])
    assert found == [second, None, first]
    assert await store.get_many([]) == []


async def test_unknown_id_is_none(store: ResultStore) -> None:
    assert await store.get(new_id()) is None


async def test_set_state_overwrites(store: ResultStore) -> None:
    task_id = new_id()
    await store.set_state(task_id, TaskMeta(task_id, status=states.STARTED), None)
    await store.set_state(task_id, success(task_id), None)
    got = await store.get(task_id)
    assert got is not None
    assert (got.status, got.result) == (states.SUCCESS, 42)


async def test_state_expires_after_ttl(store: ResultStore) -> None:
    short, kept = new_id(), new_id()
    await store.set_state(short, success(short), 0.05)
    await store.set_state(kept, success(kept), 60)

    async def expired() -> bool:
        return await store.get(short) is None

    await eventually(expired)
    assert await store.get(kept) is not None


async def test_forget(store: ResultStore) -> None:
    task_id = new_id()
    await store.set_state(task_id, success(task_id), None)
    await store.forget(task_id)
    assert await store.get(task_id) is None
    await store.forget(task_id)  # forgetting an unknown id is fine


async def test_stores_on_one_url_share_states(store: ResultStore, store_url: str) -> None:
    meta = success(new_id())
    async with connected(store_url) as other:
        await other.set_state(meta.task_id, meta, None)
    assert await store.get(meta.task_id) == meta


# --- wait -------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(states.READY_STATES))
async def test_wait_on_ready_id_returns_at_once(store: ResultStore, status: str) -> None:
    meta = TaskMeta(new_id(), status=status)
    await store.set_state(meta.task_id, meta, None)
    with anyio.fail_after(1):
        assert await store.wait(meta.task_id, timeout=None) == meta


async def assert_woken_promptly(
    store: ResultStore, set_state: Callable[[TaskMeta], Awaitable[float]]
) -> None:
    """`store.wait()` returns within 0.3 s of the SUCCESS that `set_state` stores
    (it returns the `time.monotonic()` at which it stored it)."""
    meta = success(new_id())
    returned_at = set_at = 0.0

    async def waiter() -> None:
        nonlocal returned_at
        assert await store.wait(meta.task_id, timeout=10) == meta
        returned_at = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        # Long enough for a polling waiter's backoff to have grown well past 0.3 s.
        await anyio.sleep(0.7)
        set_at = await set_state(meta)
    assert returned_at - set_at < 0.3


async def test_wait_wakes_when_another_store_sets_success(
    store: ResultStore, store_url: str
) -> None:
    async with connected(store_url) as other:

        async def set_state(meta: TaskMeta) -> float:
            started = TaskMeta(meta.task_id, status=states.STARTED)
            await other.set_state(meta.task_id, started, None)  # not ready: keeps waiting
            await other.set_state(meta.task_id, meta, None)
            return time.monotonic()

        await assert_woken_promptly(store, set_state)


async def test_wait_times_out(store: ResultStore) -> None:
    task_id = new_id()
    await store.set_state(task_id, TaskMeta(task_id, status=states.STARTED), None)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await store.wait(task_id, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2


async def wait_outcome(store: ResultStore, task_id: str, timeout: float) -> TaskMeta | str:
    try:
        return await store.wait(task_id, timeout)
    except TimeoutError:
        return "timeout"


async def test_waits_in_small_concurrent_batches_on_finished_tasks(store: ResultStore) -> None:
    """A web app awaiting results 20 at a time: every finished task's wait returns it (some
    timed out on Redis when a waiter handed the reading over to nobody)."""
    finished = [success(new_id()) for _ in range(400)]
    await store.set_states(finished, None)
    outcomes: list[TaskMeta | str] = []

    async def wait_into(meta: TaskMeta) -> None:
        outcomes.append(await wait_outcome(store, meta.task_id, 3.0))

    for start in range(0, len(finished), 20):
        async with anyio.create_task_group() as tg:
            for meta in finished[start : start + 20]:
                tg.start_soon(wait_into, meta)
    assert sorted(outcomes, key=str) == sorted(finished, key=str)


async def test_thousands_of_concurrent_waits_each_end_right(
    store: ResultStore, store_url: str
) -> None:
    """Finished tasks, tasks that finish (in another store) while everyone waits, and ids that
    never exist, waited on all at once: each wait returns its own task or times out."""
    finished = [success(new_id()) for _ in range(1500)]
    later = [success(new_id()) for _ in range(500)]
    missing = [new_id() for _ in range(300)]
    await store.set_states(finished, None)
    outcomes: dict[str, TaskMeta | str] = {}

    async def wait_into(task_id: str, timeout: float) -> None:
        outcomes[task_id] = await wait_outcome(store, task_id, timeout)

    async with connected(store_url) as other:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for meta in finished + later:
                    tg.start_soon(wait_into, meta.task_id, 30.0)
                for task_id in missing:
                    tg.start_soon(wait_into, task_id, 1.0)
                await anyio.wait_all_tasks_blocked()  # every wait is under way
                await other.set_states(later, None)
    assert [outcomes[meta.task_id] for meta in finished + later] == finished + later
    assert {outcomes[task_id] for task_id in missing} == {"timeout"}


# --- chords -----------------------------------------------------------------


async def test_chord_part_done_once_despite_duplicates(store: ResultStore) -> None:
    group_id = new_id()
    calls = ["a", "b", "a", "b", "c", "c", "a"]
    results = [await store.chord_part_done(group_id, member, 3) for member in calls]
    assert results == [False, False, False, False, True, False, False]
    assert await store.chord_part_done(group_id, "d", 3) is False


async def test_chord_groups_are_independent(store: ResultStore) -> None:
    first, second = new_id(), new_id()
    assert await store.chord_part_done(first, "a", 2) is False
    assert await store.chord_part_done(second, "a", 1) is True
    assert await store.chord_part_done(first, "b", 2) is True


async def test_a_chord_waits_for_the_members_added_to_it(store: ResultStore) -> None:
    group_id = new_id()
    assert await store.chord_part_done(group_id, "0", 2) is False
    first = await store.chord_add_member(group_id, "caller:0:0", "x")
    assert (first.position, first.task_id) == (0, "x")
    assert await store.chord_add_member(group_id, "caller:0:0", "other") == first  # redelivered
    assert (await store.chord_add_member(group_id, "caller:0:1", "y")).position == 1
    assert await store.chord_part_done(group_id, "1", 2) is False
    assert await store.chord_part_done(group_id, "2", 2) is False
    assert await store.chord_part_done(group_id, "3", 2) is True
    assert await store.chord_added(group_id) == ["x", "y"]
    assert await store.chord_added(new_id()) == []


async def test_chord_part_done_once_with_concurrent_callers(
    store: ResultStore, store_url: str
) -> None:
    group_id, size = new_id(), 20
    results: list[bool] = []

    async def member(via: ResultStore, index: int) -> None:
        results.append(await via.chord_part_done(group_id, f"m{index}", size))

    async with connected(store_url) as other, anyio.create_task_group() as tg:
        for index in range(size):
            tg.start_soon(member, store, index)
        for index in range(0, size, 2):  # redelivered, and recorded through another connection
            tg.start_soon(member, other, index)
    assert results.count(True) == 1


# --- keys, leases, revocations ----------------------------------------------


async def test_set_if_absent(store: ResultStore) -> None:
    key = new_id()
    assert await store.set_if_absent(key, b"one", 60) is True
    assert await store.set_if_absent(key, b"two", 60) is False
    assert await store.set_if_absent(key, b"one", 60) is False
    assert await store.get_key(key) == b"one"
    assert await store.get_key(new_id()) is None


async def test_plain_keys_set_replace_expire_and_delete(store: ResultStore) -> None:
    key, lasting = new_id(), new_id()
    await store.set_key(key, b"one", 60)
    await store.set_key(key, b"two", 0.05)  # replaced, with its new expiry
    await store.set_key(lasting, b"kept", None)
    assert await store.get_key(key) == b"two"
    assert await store.set_if_absent(lasting, b"other", 60) is False

    async def expired() -> bool:
        return await store.get_key(key) is None

    await eventually(expired)
    await store.delete_key(lasting)
    await store.delete_key(new_id())  # nothing there: nothing to do
    assert await store.get_key(lasting) is None
    assert await store.get(lasting) is None  # keys are not task states


async def test_set_if_absent_after_expiry(store: ResultStore) -> None:
    key = new_id()
    assert await store.set_if_absent(key, b"one", 0.05) is True

    async def taken_again() -> bool:
        return await store.set_if_absent(key, b"two", 60)

    await eventually(taken_again)
    assert await store.set_if_absent(key, b"three", 60) is False


async def test_lease_acquire_renew_deny(store: ResultStore) -> None:
    name = new_id()
    assert await store.lease(name, "a", 0.2) is True
    assert await store.lease(name, "b", 60) is False
    assert await store.lease(name, "a", 60) is True  # renewed, now for a minute
    await anyio.sleep(0.3)  # past the first expiry: the renewal must have extended it
    assert await store.lease(name, "b", 60) is False
    assert await store.lease(name, "a", 60) is True


async def test_lease_expires_then_another_owner_takes_over(store: ResultStore) -> None:
    name = new_id()
    assert await store.lease(name, "a", 0.05) is True

    async def taken_by_b() -> bool:
        return await store.lease(name, "b", 60)

    await eventually(taken_by_b)
    assert await store.lease(name, "a", 60) is False


async def test_lease_remaining(store: ResultStore) -> None:
    assert await store.lease_remaining("beat") is None
    assert await store.lease("beat", "a", 5.0)
    remaining = await store.lease_remaining("beat")
    assert remaining is not None and 4.0 < remaining <= 5.0
    assert await store.lease("beat", "a", 0.2)
    await eventually(lambda: _is_none(store.lease_remaining("beat")))


async def test_lease_holder_is_the_owner_until_the_lease_ends(store: ResultStore) -> None:
    name = new_id()
    assert await store.lease_holder(name) is None
    assert await store.lease(name, "beat-a", 0.2)
    assert await store.lease_holder(name) == "beat-a"
    await eventually(lambda: _is_none(store.lease_holder(name)))


async def _is_none(value: Awaitable[object]) -> bool:
    return await value is None


async def test_revoke_and_revoked(store: ResultStore) -> None:
    a, b, c = new_id(), new_id(), new_id()
    assert await store.revoked([a, b, c]) == set()
    await store.revoke([a, b], 60)
    assert await store.revoked([a, b, c]) == {a, b}
    assert await store.revoked([]) == set()


async def test_revocation_expires(store: ResultStore) -> None:
    short, kept = new_id(), new_id()
    await store.revoke([short], 0.05)
    await store.revoke([kept], 60)

    async def only_kept() -> bool:
        return await store.revoked([short, kept]) == {kept}

    await eventually(only_kept)
    assert kept in await store.all_revoked()
    assert short not in await store.all_revoked()


async def test_all_revoked_lists_every_live_revocation(store: ResultStore) -> None:
    ids = {new_id() for _ in range(3)}
    await store.revoke(sorted(ids), 60)
    assert ids <= await store.all_revoked()


async def test_close_is_idempotent(store_url: str) -> None:
    store = create_store(store_url, SLOW_POLLING)
    await store.connect()
    await store.close()
    await store.close()


# --- SQLite across processes --------------------------------------------------

CHILD = """
import sys, anyio
from taskq import states
from taskq.stores.base import TaskMeta, create_store

async def main(url, op, *args):
    store = create_store(url)
    await store.connect()
    if op == "set":
        await store.set_state(args[0], TaskMeta(args[0], status=states.SUCCESS, result=7), None)
    else:
        done = [await store.chord_part_done(args[0], m, int(args[1])) for m in args[2:]]
        print(done.count(True))
    await store.close()

anyio.run(main, *sys.argv[1:])
"""


async def run_child(*args: str) -> str:
    result = await anyio.run_process([sys.executable, "-c", CHILD, *args])
    return result.stdout.decode()


@pytest.mark.integration
async def test_sqlite_wait_sees_state_from_another_process(tmp_path: Path) -> None:
    url, task_id = sqlite_url(tmp_path), new_id()
    returned_at = 0.0

    async def waiter(store: ResultStore) -> None:
        nonlocal returned_at
        meta = await store.wait(task_id, timeout=10)
        returned_at = time.monotonic()
        assert meta.result == 7

    options = Settings(result_backend_transport_options={"polling_interval": 0.2})
    async with connected(url, options) as store, anyio.create_task_group() as tg:
        tg.start_soon(waiter, store)
        await run_child(url, "set", task_id)
        written_by = time.monotonic()
    assert returned_at - written_by < 1.0


@pytest.mark.integration
async def test_sqlite_chord_counts_across_processes(tmp_path: Path) -> None:
    url, group_id, size = sqlite_url(tmp_path), new_id(), 40
    members = [f"m{i}" for i in range(size)]
    # Overlapping halves: members 15..24 are recorded by both processes.
    first, second = [*members[:25], *members[:5]], members[15:]
    outputs: list[str] = []

    async def child(batch: list[str]) -> None:
        outputs.append(await run_child(url, "chord", group_id, str(size), *batch))

    async with anyio.create_task_group() as tg:  # the children also race to create the schema
        tg.start_soon(child, first)
        tg.start_soon(child, second)
    assert sum(int(out) for out in outputs) == 1
    async with connected(url) as store:
        assert await store.chord_part_done(group_id, "m0", size) is False
