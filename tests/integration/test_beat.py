"""Beat: firing into a worker, state kept across restarts, dynamic entries, schedules
written in code, and several beat processes with the leader killed."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import TaskqProcess, wait_for

from taskq import TaskQ, crontab, solar, states
from taskq.beat import Beat, Schedule, rrule
from taskq.beat.scheduler import LEADER_LEASE, read_state
from taskq.errors import ConfigurationError
from taskq.stores.base import TaskMeta
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "redis"])
def broker_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The beat processes of the fail-over test share this broker and store."""
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_server').url}?prefix=beat{uuid.uuid4().hex[:8]}:"
    return sqlite_url


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TaskQ]:
    app = TaskQ(
        "beat",
        broker=f"sqlite:///{tmp_path}/beat.db",
        broker_transport_options={"polling_interval": 0.02},
    )
    ticks: list[float] = []

    @app.task(name="b.tick", bind=True)
    async def tick(self: Any) -> None:
        ticks.append(self.request.headers["beat_scheduled_at"])

    app.ticks = ticks  # type: ignore[attr-defined]
    app.conf.beat_schedule = {"tick": {"task": "b.tick", "schedule": 0.2}}
    async with app:
        yield app


async def run_beat_until(app: TaskQ, done: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(Beat(app, lease_ttl=1).run)
            while not done():  # noqa: ASYNC110 - the condition is a plain list filled by tasks
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()


async def test_interval_entry_fires_into_a_worker(app: TaskQ) -> None:
    ticks: list[float] = app.ticks  # type: ignore[attr-defined]
    async with running_worker(app):
        await run_beat_until(app, lambda: len(ticks) >= 4)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(ticks)]
    assert gaps and all(gap == 0.2 for gap in gaps[:3]), gaps


async def test_restarted_beat_continues_from_the_stored_state(app: TaskQ) -> None:
    ticks: list[float] = app.ticks  # type: ignore[attr-defined]
    store = await app.connected_store()
    async with running_worker(app):
        await run_beat_until(app, lambda: len(ticks) >= 2)
        first = await read_state(store, "tick")
        assert first is not None and first.total_runs >= 2
        await run_beat_until(app, lambda: len(ticks) >= first.total_runs + 2)
    second = await read_state(store, "tick")
    assert second is not None and second.total_runs >= first.total_runs + 2
    assert len(ticks) == len(set(ticks))


async def test_a_disabled_entry_does_not_fire_until_enabled_again(app: TaskQ) -> None:
    ticks: list[float] = app.ticks  # type: ignore[attr-defined]
    tocks: list[str] = []

    @app.task(name="b.tock")
    async def tock() -> None:
        tocks.append("tock")

    await app.beat.add("tock", task="b.tock", schedule=0.1)
    await app.beat.set_enabled("tick", False)
    with pytest.raises(ValueError, match=r"no beat entry 'tik' \(did you mean 'tick'\?\)"):
        await app.beat.set_enabled("tik", False)
    assert await app.beat.disabled() == {"tick"}
    async with running_worker(app):
        await run_beat_until(app, lambda: len(tocks) >= 5)
        assert ticks == []
        await app.beat.set_enabled("tick", True)
        await run_beat_until(app, lambda: len(ticks) >= 1)
    assert await app.beat.disabled() == set()


async def test_dynamic_entries_are_stored_and_config_removals_forget_state(app: TaskQ) -> None:
    await app.beat.add("report", task="b.tick", schedule=crontab(minute="*/15"))
    assert [entry.name for entry in await app.beat.entries()] == ["report", "tick"]
    store = await app.connected_store()
    await app.beat.sync_static()  # what every beat does when it starts
    await Beat(app).tick(store)
    assert await read_state(store, "tick") is not None
    app.conf.beat_schedule = {}
    await app.beat.sync_static()
    assert await read_state(store, "tick") is None
    await app.beat.remove("report")
    assert await app.beat.entries() == []
    # Beat's bookkeeping is not taken for tasks.
    assert await app.AsyncResult("beat:entries").status() == states.PENDING
    assert await app.AsyncResult("beat:state:report").status() == states.PENDING


class QuarterSecond(Schedule):
    def next_after(self, last_run: datetime) -> datetime:
        return last_run + timedelta(seconds=0.25)


class DueAQuarterSecondAfterTheLastRun:
    """Celery's shape: is_due(last_run_at) -> (is_due, seconds until the next check)."""

    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        elapsed = (datetime.now(UTC) - last_run_at).total_seconds()
        return (True, 0.25) if elapsed >= 0.25 else (False, 0.25 - elapsed)


async def test_schedules_written_in_code_send_tasks_and_survive_a_restart(
    app_settings: dict[str, Any],
) -> None:
    calls: list[datetime | None] = []

    def at_once_then_every_fifth(last_run: datetime | None) -> timedelta:
        calls.append(last_run)
        return timedelta(0) if last_run is None else timedelta(seconds=0.2)

    app = TaskQ("beat", **app_settings)
    fired: dict[str, list[float]] = defaultdict(list)

    @app.task(name="b.record", bind=True)
    async def record(self: Any) -> None:
        fired[self.request.headers["beat_entry"]].append(self.request.headers["beat_scheduled_at"])

    app.conf.beat_schedule = {
        "function": {"task": "b.record", "schedule": at_once_then_every_fifth},
        "subclass": {"task": "b.record", "schedule": QuarterSecond()},
        "is_due": {"task": "b.record", "schedule": DueAQuarterSecondAfterTheLastRun()},
    }
    started = datetime.now(UTC).timestamp()
    async with app, running_worker(app):
        await run_beat_until(app, lambda: len(fired) == 3 and min(map(len, fired.values())) >= 3)
        store = await app.connected_store()
        runs = {name: await read_state(store, name) for name in fired}
        wanted = {name: state.total_runs + 2 for name, state in runs.items() if state}
        assert len(wanted) == 3
        await run_beat_until(app, lambda: all(len(fired[n]) >= k for n, k in wanted.items()))
    assert fired["function"][0] - started < 0.5  # None before the first run: at once
    assert calls.count(None) == 1  # the restarted beat was given the stored last run
    for name, period in (("function", 0.2), ("subclass", 0.25)):
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(fired[name])]
        assert all(round(gap / period, 3).is_integer() for gap in gaps), (name, gaps)
        assert len(fired[name]) == len(set(fired[name])), name
    polled = [round(b - a, 3) for a, b in itertools.pairwise(fired["is_due"])]
    assert all(gap >= 0.25 for gap in polled), polled


async def test_catch_up_false_on_an_is_due_schedule_is_a_clear_error(app: TaskQ) -> None:
    schedule = DueAQuarterSecondAfterTheLastRun()
    app.conf.beat_schedule = {"p": {"task": "b.tick", "schedule": schedule, "catch_up": False}}
    with pytest.raises(ConfigurationError, match="catch_up=False does not apply to an is_due"):
        await app.beat.entries()


async def test_schedules_in_code_are_not_stored_and_the_others_round_trip(app: TaskQ) -> None:
    with pytest.raises(ConfigurationError, match="defined in code and cannot be stored"):
        await app.beat.add("hourly", "b.tick", lambda last_run: timedelta(hours=1))
    dusk = solar("dusk_civil", 48.85, 2.35)
    weekly = rrule("weekly", dtstart=datetime(2026, 1, 5, 9))
    await app.beat.add("dusk", "b.tick", dusk)
    await app.beat.add("weekly", "b.tick", weekly)
    stored = {entry.name: entry.schedule for entry in await app.beat.entries()}
    assert stored == {"dusk": dusk, "weekly": weekly, "tick": stored["tick"]}


async def test_entries_kept_by_an_older_beat_as_task_results_are_read_and_moved(
    app: TaskQ,
) -> None:
    store = await app.connected_store()
    legacy = {"static": [], "dynamic": {"old": {"task": "b.tick", "schedule": 60.0}}}
    await store.set_state(
        "beat:entries", TaskMeta("beat:entries", states.SUCCESS, result=legacy), None
    )
    assert [entry.name for entry in await app.beat.entries()] == ["old", "tick"]
    assert await store.get("beat:entries") is None  # moved
    assert [entry.name for entry in await app.beat.entries()] == ["old", "tick"]


async def test_concurrent_dynamic_entries_are_all_kept(broker_url: str) -> None:
    """Each `add` reads, changes and writes back the stored entries: under the store's lock,
    so adds from many callers at once lose none."""
    async with TaskQ("beat", broker=broker_url) as app:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(app.beat.add, f"entry-{n}", "b.tick", 60.0)
        assert [entry.name for entry in await app.beat.entries()] == sorted(
            f"entry-{n}" for n in range(20)
        )


async def test_a_bad_entry_is_a_clear_error(app: TaskQ) -> None:
    app.conf.beat_schedule = {"broken": {"task": "b.tick", "every": 5}}
    with pytest.raises(ConfigurationError, match="needs 'task' and 'schedule'"):
        await app.beat.entries()


async def test_a_standby_takes_over_the_moment_the_dead_leaders_lease_ends(
    app: TaskQ,
) -> None:
    """Standbys looked at the lease every third of its TTL, so they took over up to 4/3 TTL
    after the leader died; they look again when it would end."""
    app.conf.beat_schedule = {}  # nothing due: the leader renews every third of the TTL
    store = await app.connected_store()
    leader, standby = Beat(app, lease_ttl=1.5, name="a"), Beat(app, lease_ttl=1.5, name="b")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as beats:
            leader_scope = anyio.CancelScope()
            beats.start_soon(_run_in, leader_scope, leader)
            while not leader.leading:  # noqa: ASYNC110 - set by the beat's own loop
                await anyio.sleep(0.01)
            await anyio.sleep(0.25)  # out of step with the leader's renewals, half a period
            beats.start_soon(standby.run)
            await anyio.sleep(1.0)  # the standby has looked at the held lease
            leader_scope.cancel()  # dies without giving the lease up
            remaining = await store.lease_remaining(LEADER_LEASE)
            assert remaining is not None
            ends = anyio.current_time() + remaining
            while not standby.leading:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            took_over = anyio.current_time()
            beats.cancel_scope.cancel()
    assert took_over - ends < 0.15


async def _run_in(scope: anyio.CancelScope, beat: Beat) -> None:
    with scope:
        await beat.run()


def test_leader_killed_another_takes_over_and_each_tick_runs_once(
    worker_env: dict[str, str], tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    marker = tmp_path / "ticks"
    schedule = {"tick": {"task": "itest.record_tick", "schedule": 2.0, "args": [str(marker)]}}
    env = {**worker_env, "TASKQ_BEAT_SCHEDULE": json.dumps(schedule), "TASKQ_BEAT_LEASE_TTL": "1.5"}
    start_worker()
    beats = [TaskqProcess(env, tmp_path / f"beat-{i}.log", ["beat"], "started") for i in range(3)]
    try:
        wait_for(lambda: any("is the leader" in beat.output() for beat in beats))
        wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 2, timeout=20)
        leader = next(beat for beat in beats if "is the leader" in beat.output())
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        seen = len(marker.read_text().split())
        wait_for(lambda: len(marker.read_text().split()) >= seen + 3, timeout=30)
        assert sum("is the leader" in beat.output() for beat in beats if beat is not leader) == 1
    finally:
        for beat in beats:
            if beat.process.poll() is None:
                beat.process.send_signal(signal.SIGTERM)
                beat.process.wait(timeout=15)
    ticks = sorted(float(line) for line in marker.read_text().split())
    assert len(ticks) == len(set(ticks)), "a tick was published twice"
    assert all(round(b - a, 3) == 2.0 for a, b in itertools.pairwise(ticks)), ticks


def test_beat_list_and_worker_with_beat(
    worker_env: dict[str, str], tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    marker = tmp_path / "ticks"
    nightly = crontab(minute=15, hour=2).to_dict()
    schedule = {
        "tick": {"task": "itest.record_tick", "schedule": 0.5, "args": [str(marker)]},
        "nightly": {"task": "itest.add", "schedule": nightly, "args": [1, 2]},
    }
    env = {**worker_env, "TASKQ_BEAT_SCHEDULE": json.dumps(schedule)}

    async def disable_nightly() -> None:
        async with TaskQ("lister", broker=env["TASKQ_BROKER_URL"]) as lister:
            lister.conf.beat_schedule = schedule
            await lister.beat.set_enabled("nightly", False)

    anyio.run(disable_nightly)
    listed = subprocess.run(
        [sys.executable, "-m", "taskq", "beat", "-A", "itest_tasks:app", "--list"],
        env=env, cwd=Path(__file__).parent, capture_output=True, text=True,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = sorted(listed.stdout.splitlines())
    assert lines[0].startswith("nightly: itest.add crontab(minute='15', hour='2'")
    assert lines[0].endswith(" disabled runs 0")
    assert lines[1].startswith("tick: itest.record_tick Interval(seconds=0.5)")
    worker_env.update(env)
    start_worker("--beat")
    wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 2)


def test_beat_list_names_the_next_run_of_every_kind_of_schedule(
    worker_env: dict[str, str],
) -> None:
    before = datetime.now(UTC)
    listed = subprocess.run(
        [sys.executable, "-m", "taskq", "beat", "-A", "beat_list_app:app", "--list"],
        env=worker_env, cwd=Path(__file__).parent, capture_output=True, text=True,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = {line.split(":")[0]: line for line in listed.stdout.splitlines()}
    assert sorted(lines) == sorted(
        ["cron", "sunset", "monthly", "used-up", "function", "subclass", "is-due"]
    )

    def next_run(name: str) -> datetime:
        return datetime.fromisoformat(lines[name].split(" next ")[1].split()[0])

    assert "crontab(minute=15, hour=2," in lines["cron"]
    assert next_run("cron").strftime("%H:%M") == "02:15"
    assert lines["sunset"].startswith("sunset: noop solar('sunset', 51.5074, -0.1278) next ")
    assert before < next_run("sunset") < before + timedelta(days=1)
    assert "rrule('DTSTART:20300131T090000 RRULE:FREQ=MONTHLY')" in lines["monthly"]
    assert next_run("monthly") == datetime(2030, 1, 31, 9, tzinfo=UTC)
    assert lines["used-up"].endswith(" next never runs 0")
    assert "beat_list_app.<lambda> (in code)" in lines["function"]
    assert timedelta(minutes=59) < next_run("function") - before < timedelta(minutes=61)
    assert "beat_list_app.NewYear2031() (in code)" in lines["subclass"]
    assert next_run("subclass") == datetime(2031, 1, 1, tzinfo=UTC)
    assert "CheckHourly() (is_due, in code)" in lines["is-due"]
    assert timedelta(minutes=59) < next_run("is-due") - before < timedelta(minutes=61)
