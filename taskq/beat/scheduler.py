"""Beat: the scheduler that publishes periodic tasks.

Its state lives in the result store, not in a local file: each entry's last
scheduled run and run count, and the entries added at runtime. Any number of beat
processes may run; the one holding the `lease` is the leader and fires, the others
stand by and take over within one lease TTL. Every fire is de-duplicated by
(entry, scheduled time) with `set_if_absent`, so two instances that both think they
lead for a moment still publish a tick once. A standby looks at the lease again when it
would end, so it takes over within one TTL of the leader's death.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import orjson

from taskq import defaults
from taskq.beat.base import Schedule
from taskq.beat.custom import Polled
from taskq.beat.schedules import as_schedule
from taskq.errors import ConfigurationError
from taskq.stores.base import ResultStore
from taskq.suggest import did_you_mean

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.beat")

LEADER_LEASE = "beat:leader"
ENTRIES_KEY = "beat:entries"
ENTRIES_LOCK = "beat:entries:lock"
ENTRIES_LOCK_TTL = 10.0  # a lock whose holder died frees itself after this
ENTRIES_LOCK_RETRY = 0.01
STATE_KEY = "beat:state:{}"
FIRED_KEY = "beat:fired:{}:{}"
FIRED_KEY_TTL = defaults.WEEK
MIN_LOOK_INTERVAL = 0.01
# A tick later than this is "missed" (downtime), not merely due.
ON_TIME = 5.0
ENTRY_FIELDS = frozenset(
    {"task", "schedule", "args", "kwargs", "options", "catch_up", "start_at", "end_at"}
)


@dataclass(slots=True)
class Entry:
    """One periodic task: what to publish, and when."""

    name: str
    task: str
    schedule: Schedule | Polled
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: bool = True
    start_at: datetime | None = None
    end_at: datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.schedule, Polled) and not self.catch_up:
            raise ConfigurationError(
                f"beat entry {self.name!r}: catch_up=False does not apply to an is_due schedule,"
                " which has no missed runs (it fires when is_due says so)"
            )

    @classmethod
    def from_config(cls, name: str, spec: dict[str, Any]) -> Entry:
        unknown = set(spec) - ENTRY_FIELDS
        if unknown or "task" not in spec or "schedule" not in spec:
            raise ConfigurationError(
                f"beat entry {name!r}: needs 'task' and 'schedule'"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        return cls(
            name,
            spec["task"],
            as_schedule(spec["schedule"]),
            list(spec.get("args", ())),
            dict(spec.get("kwargs") or {}),
            dict(spec.get("options") or {}),
            bool(spec.get("catch_up", True)),
            _moment(spec.get("start_at")),
            _moment(spec.get("end_at")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "schedule": self.schedule.to_dict(),
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "catch_up": self.catch_up,
            "start_at": self.start_at.timestamp() if self.start_at else None,
            "end_at": self.end_at.timestamp() if self.end_at else None,
        }


@dataclass(slots=True)
class EntryState:
    last_run: float
    total_runs: int = 0


def _disabled(stored: dict[str, Any]) -> list[str]:
    """The disabled entries' names (a store written before beat had them has none)."""
    return list(stored.get("disabled", []))


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), UTC)


class BeatEntries:
    """`app.beat`: entries added at runtime, kept in the result store."""

    def __init__(self, app: TaskQ) -> None:
        self.app = app

    async def add(
        self,
        name: str,
        task: str,
        schedule: Any,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        catch_up: bool = True,
    ) -> None:
        """Add (or replace) a dynamic entry; running beats pick it up on their next tick."""
        entry = Entry(
            name,
            task,
            as_schedule(schedule),
            list(args or []),
            dict(kwargs or {}),
            dict(options or {}),
            catch_up,
        )
        async with self._editing() as stored:
            stored["dynamic"][name] = entry.to_dict()

    async def remove(self, name: str) -> None:
        async with self._editing() as stored:
            removed = stored["dynamic"].pop(name, None) is not None
            stored["disabled"] = [other for other in _disabled(stored) if other != name]
        if removed:
            await (await self.app.connected_store()).delete_key(STATE_KEY.format(name))

    async def entries(self) -> list[Entry]:
        """The static entries of `beat_schedule` and the dynamic ones, by name."""
        return self._entries(await self._load())

    async def enabled_entries(self) -> list[Entry]:
        """The entries that fire: all but the disabled ones."""
        stored = await self._load()
        disabled = _disabled(stored)
        return [entry for entry in self._entries(stored) if entry.name not in disabled]

    async def disabled(self) -> set[str]:
        return set(_disabled(await self._load()))

    async def set_enabled(self, name: str, enabled: bool) -> None:
        """Disable entry `name` (static or dynamic): no beat fires it until it is enabled
        again, when it runs as after a downtime (its `catch_up`)."""
        async with self._editing() as stored:
            known = [entry.name for entry in self._entries(stored)]
            if name not in known:
                raise ValueError(f"no beat entry {name!r}{did_you_mean(name, known)}")
            disabled = set(_disabled(stored)) - {name}
            stored["disabled"] = sorted(disabled if enabled else disabled | {name})

    def _entries(self, stored: dict[str, Any]) -> list[Entry]:
        static = {
            name: Entry.from_config(name, spec)
            for name, spec in self.app.conf.beat_schedule.items()
        }
        dynamic = {name: Entry.from_config(name, spec) for name, spec in stored["dynamic"].items()}
        return [entry for _, entry in sorted({**dynamic, **static}.items())]

    async def _load(self) -> dict[str, Any]:
        store = await self.app.connected_store()
        stored: dict[str, Any] = await _read(store, ENTRIES_KEY) or {"static": [], "dynamic": {}}
        return stored

    @asynccontextmanager
    async def _editing(self) -> AsyncIterator[dict[str, Any]]:
        """The stored entries to change in place, written back on exit; under a lock (a
        store lease, given up by renewing it for no time), so concurrent edits lose none."""
        store = await self.app.connected_store()
        owner = secrets.token_hex(8)
        while not await store.lease(ENTRIES_LOCK, owner, ENTRIES_LOCK_TTL):  # noqa: ASYNC110
            await anyio.sleep(ENTRIES_LOCK_RETRY)  # its holder may be another process
        try:
            stored = await self._load()
            yield stored
            await store.set_key(ENTRIES_KEY, orjson.dumps(stored), None)
        finally:
            with anyio.CancelScope(shield=True):
                await store.lease(ENTRIES_LOCK, owner, 0)

    async def sync_static(self) -> None:
        """Forget the state of static entries that left `beat_schedule` since the last start."""
        current = sorted(self.app.conf.beat_schedule)
        store = await self.app.connected_store()
        async with self._editing() as stored:
            gone = set(stored["static"]) - set(current)
            for name in gone:
                await store.delete_key(STATE_KEY.format(name))
            stored["static"] = current
            stored["disabled"] = [name for name in _disabled(stored) if name not in gone]


class Beat:
    """One beat instance: `await Beat(app).run()` until cancelled."""

    def __init__(self, app: TaskQ, lease_ttl: float | None = None, name: str | None = None) -> None:
        self.app = app
        self.lease_ttl = lease_ttl or app.conf.beat_lease_ttl
        self.name = name or f"{os.getpid()}@{socket.gethostname()}"
        self.tz = _zone(app.conf.timezone)
        self.leading = False

    async def run(self) -> None:
        self.app.import_task_modules()
        store = await self.app.connected_store()
        await self.app.beat.sync_static()
        logger.info(
            "Beat %s started (lease %.1fs, timezone %s)", self.name, self.lease_ttl, self.tz
        )
        while True:
            leading = await store.lease(LEADER_LEASE, self.name, self.lease_ttl)
            if leading != self.leading:
                logger.info("Beat %s %s", self.name, "is the leader" if leading else "stands by")
                self.leading = leading
            if leading:
                wait = min(self.lease_ttl / 3, await self.tick(store))
            else:  # look again the moment the leader's lease would end: take over within a TTL
                wait = min(await store.lease_remaining(LEADER_LEASE) or 0.0, self.lease_ttl)
            await anyio.sleep(max(wait, MIN_LOOK_INTERVAL))

    async def tick(self, store: ResultStore) -> float:
        """Fire what is due; returns the seconds until the next entry is due."""
        now = datetime.now(UTC)
        soonest = self.app.conf.beat_max_loop_interval
        for entry in await self.app.beat.enabled_entries():
            due = await self._fire_if_due(store, entry, now)
            if due is not None:
                soonest = min(soonest, (due - now).total_seconds())
        return soonest

    async def _fire_if_due(
        self, store: ResultStore, entry: Entry, now: datetime
    ) -> datetime | None:
        state = await self._state(store, entry, now)
        if isinstance(entry.schedule, Polled):
            return await self._poll(store, entry, entry.schedule, state, now)
        due = self.next_run(entry, state.last_run, first=state.total_runs == 0)
        if due is None or (entry.end_at is not None and due > entry.end_at):
            return None
        if due > now:
            return due
        latest = due
        while (following := self.next_run(entry, latest.timestamp())) and following <= now:
            latest = following
        if entry.catch_up or (now - latest).total_seconds() <= ON_TIME:
            await self._fire(store, entry, latest)
            state.total_runs += 1
        state.last_run = latest.timestamp()
        await self._save_state(store, entry, state)
        return self.next_run(entry, state.last_run)

    async def _poll(
        self, store: ResultStore, entry: Entry, schedule: Polled, state: EntryState, now: datetime
    ) -> datetime | None:
        """An `is_due` schedule has no run times to compute: ask it, fire now if it says so,
        and ask again when it says to. A fire is de-duplicated by the run it follows."""
        if entry.start_at is not None and now < entry.start_at:
            return entry.start_at
        if entry.end_at is not None and now > entry.end_at:
            return None
        due, check = schedule.poll(datetime.fromtimestamp(state.last_run, self.tz))
        if due:
            fired_at = datetime.now(UTC)  # not before is_due said so: the tick began earlier
            await self._fire(store, entry, fired_at, once_key=f"after:{state.last_run}")
            state.total_runs += 1
            state.last_run = fired_at.timestamp()
            await self._save_state(store, entry, state)
        return now + timedelta(seconds=check)

    async def _fire(
        self, store: ResultStore, entry: Entry, scheduled: datetime, once_key: str | None = None
    ) -> None:
        key = FIRED_KEY.format(entry.name, once_key or scheduled.timestamp())
        if not await store.set_if_absent(key, self.name.encode(), FIRED_KEY_TTL):
            return
        headers = {
            **entry.options.get("headers", {}),
            "beat_entry": entry.name,
            "beat_scheduled_at": scheduled.timestamp(),
        }
        options = {**entry.options, "headers": headers}
        result = await self.app.send_task(entry.task, entry.args, entry.kwargs, **options)
        logger.info(
            "Beat fired %s (%s) for %s: task %s",
            entry.name,
            entry.task,
            scheduled.isoformat(),
            result.id,
        )

    def next_run(self, entry: Entry, after: float, first: bool = False) -> datetime | None:
        """The run of a computed schedule after the run at `after` (or, `first`, after the
        moment a beat first saw the entry); None when it will not run again."""
        assert not isinstance(entry.schedule, Polled)
        moment = datetime.fromtimestamp(after, self.tz)
        if entry.start_at is not None and moment < entry.start_at:
            moment = entry.start_at - timedelta(microseconds=1)
        if first:
            return entry.schedule.first_after(moment)
        return entry.schedule.next_after(moment)

    def upcoming(self, entry: Entry, state: EntryState | None, now: datetime) -> datetime | None:
        """When `entry` runs next as far as one can tell now (an `is_due` schedule: now if it
        is due, else its next check); None if never again."""
        last = datetime.fromtimestamp(state.last_run if state else now.timestamp(), self.tz)
        if isinstance(entry.schedule, Polled):
            due, check = entry.schedule.poll(last)
            return now if due else now + timedelta(seconds=check)
        first = state is None or state.total_runs == 0
        upcoming = self.next_run(entry, last.timestamp(), first)
        if upcoming is None or (entry.end_at is not None and upcoming > entry.end_at):
            return None
        return upcoming

    async def _state(self, store: ResultStore, entry: Entry, now: datetime) -> EntryState:
        state = await read_state(store, entry.name)
        if state is None:
            state = EntryState(now.timestamp())  # a new entry runs first one period from now
            await self._save_state(store, entry, state)
        return state

    async def _save_state(self, store: ResultStore, entry: Entry, state: EntryState) -> None:
        saved = {"last_run": state.last_run, "total_runs": state.total_runs}
        await store.set_key(STATE_KEY.format(entry.name), orjson.dumps(saved), None)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown timezone {name!r}") from exc


async def read_state(store: ResultStore, name: str) -> EntryState | None:
    """The stored state of entry `name`, if it has run or been seen by a beat."""
    saved = await _read(store, STATE_KEY.format(name))
    if not isinstance(saved, dict):
        return None
    return EntryState(float(saved["last_run"]), int(saved["total_runs"]))


async def _read(store: ResultStore, key: str) -> Any:
    """The JSON value stored under `key`, or None. Beats before 0.2 kept it as the result of
    a task of that name: such a value is moved to the key the first time it is read."""
    raw = await store.get_key(key)
    if raw is not None:
        return orjson.loads(raw)
    legacy = await store.get(key)
    if legacy is None:
        return None
    await store.set_key(key, orjson.dumps(legacy.result), None)
    await store.forget(key)
    return legacy.result
