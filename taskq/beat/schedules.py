"""Schedules: `crontab(...)` with Celery's field syntax, fixed intervals, and `as_schedule`,
which reads every kind an entry may give (see `taskq.beat.base` for what a schedule is).

A crontab is evaluated on the wall clock of its time zone: a time that does not
exist (the hour skipped when DST starts) is skipped, and a time that happens twice
(when DST ends) runs once, at its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from taskq.beat.base import Schedule, localize
from taskq.beat.custom import CallableSchedule, Polled
from taskq.beat.recurrence import Recurrence, is_rrule
from taskq.beat.solar import solar
from taskq.errors import ConfigurationError
from taskq.suggest import did_you_mean


@dataclass(frozen=True, slots=True)
class Interval(Schedule):
    """Every `seconds` seconds, counted from the last run."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ConfigurationError(f"an interval must be positive, not {self.seconds}")

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "interval", "seconds": self.seconds}


_DAY_NAMES = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")
# Enough to cross any gap a valid crontab can have (Feb 29 on a Monday: 28 years).
_SEARCH_LIMIT = timedelta(days=366 * 29)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)

    def parse(self, spec: object) -> frozenset[int]:
        text = str(spec).strip().lower()
        values: set[int] = set()
        for item in text.split(","):
            values |= self._item(item.strip(), spec)
        return frozenset(values)

    def _item(self, item: str, spec: object) -> set[int]:
        match = _ITEM.match(item)
        if match is None:
            raise self._error(spec, f"cannot read {item!r}")
        span, step = match.group(1), int(match.group(2) or 1)
        if step < 1:
            raise self._error(spec, "a step must be at least 1")
        if span == "*":
            low, high = self.low, self.high
        else:
            bounds = [self._number(part, spec) for part in span.split("-")]
            low, high = bounds[0], bounds[-1]
            if match.group(2) and len(bounds) == 1:
                high = self.high  # "5/15": from 5 to the end, every 15
        if low > high:
            raise self._error(spec, f"range {item!r} runs backwards")
        return set(range(low, high + 1, step))

    def _number(self, text: str, spec: object) -> int:
        value = self.names.get(text[:3]) if not text.isdigit() else int(text)
        if value is None:
            raise self._error(spec, f"unknown name {text!r}")
        if self.name == "day_of_week" and value == 7:
            value = 0  # 7 is Sunday too
        if not self.low <= value <= self.high:
            raise self._error(spec, f"{value} is outside {self.low}-{self.high}")
        return value

    def _error(self, spec: object, why: str) -> ConfigurationError:
        return ConfigurationError(f"bad crontab {self.name}={spec!r}: {why}")


_FIELDS = {
    "minute": _Field("minute", 0, 59),
    "hour": _Field("hour", 0, 23),
    "day_of_week": _Field("day_of_week", 0, 7, _DAY_NAMES),
    "day_of_month": _Field("day_of_month", 1, 31),
    "month_of_year": _Field("month_of_year", 1, 12, _MONTH_NAMES),
}


class crontab(Schedule):
    """`crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")`.

    Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, and
    names (`mon`, `jan`). Day of week 0 (or 7) is Sunday. As in Celery, a run needs
    both the day of month and the day of week to match.
    """

    def __init__(
        self,
        minute: str | int = "*",
        hour: str | int = "*",
        day_of_week: str | int = "*",
        day_of_month: str | int = "*",
        month_of_year: str | int = "*",
        tz: tzinfo | None = None,
    ) -> None:
        self.spec = {
            "minute": minute,
            "hour": hour,
            "day_of_week": day_of_week,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
        }
        self.tz = tz
        self.minutes, self.hours, self.weekdays, self.days, self.months = (
            _FIELDS[name].parse(value) for name, value in self.spec.items()
        )
        self.weekdays = frozenset(day % 7 for day in self.weekdays)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.spec.items())
        return f"crontab({fields})"

    def _key(self) -> tuple[frozenset[int], ...]:
        return (self.minutes, self.hours, self.weekdays, self.days, self.months)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_dict(self) -> dict[str, Any]:
        return {"type": "crontab", **{name: str(value) for name, value in self.spec.items()}}

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after `moment`, in this crontab's time zone."""
        tz = self.tz or moment.tzinfo or UTC
        wall = moment.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        candidate = wall + timedelta(minutes=1)
        limit = wall + _SEARCH_LIMIT
        while candidate < limit:
            step = self._skip(candidate)
            if step is not None:
                candidate = step
                continue
            real = localize(candidate, tz)
            if real is not None and real > moment:
                return real
            candidate += timedelta(minutes=1)
        raise ConfigurationError(f"{self!r} never runs")

    def _skip(self, wall: datetime) -> datetime | None:
        """The next wall time worth looking at when `wall` does not match, else None."""
        if wall.month not in self.months:
            return (wall.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0)
        if wall.day not in self.days or (wall.isoweekday() % 7) not in self.weekdays:
            return (wall + timedelta(days=1)).replace(hour=0, minute=0)
        if wall.hour not in self.hours:
            return (wall + timedelta(hours=1)).replace(minute=0)
        if wall.minute not in self.minutes:
            return wall + timedelta(minutes=1)
        return None


def as_schedule(value: Any) -> Schedule | Polled:
    """A schedule from config: a schedule object, seconds, a timedelta, a dateutil rrule, an
    object with Celery's `is_due`, a function of the last run, or a `to_dict()` form."""
    if isinstance(value, Schedule):
        return _checked_subclass(value)
    if isinstance(value, Polled):
        return value
    if isinstance(value, timedelta):
        return Interval(value.total_seconds())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Interval(float(value))
    if isinstance(value, dict):
        return _from_dict(value)
    if is_rrule(value):
        return Recurrence(value)
    if callable(getattr(value, "is_due", None)) and not isinstance(value, type):
        return Polled(value)
    if callable(value) and not isinstance(value, type):
        return CallableSchedule(value)
    raise ConfigurationError(
        f"bad schedule {value!r}: expected crontab(...), solar(...), an rrule, seconds, a"
        " timedelta, a Schedule instance or a function of the last run"
    )


def _checked_subclass(schedule: Schedule) -> Schedule | Polled:
    """A user's Schedule subclass overrides next_after, or has Celery's is_due instead."""
    if type(schedule).next_after is not Schedule.next_after:
        return schedule
    if callable(getattr(schedule, "is_due", None)):
        return Polled(schedule)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"{type(schedule).__qualname__} must override next_after(last_run) or define"
        " is_due(last_run_at)"
    )


_FROM_DICT: dict[str, Callable[[dict[str, Any]], Schedule]] = {
    "interval": lambda spec: Interval(float(spec["seconds"])),
    "crontab": lambda spec: crontab(**{name: spec[name] for name in _FIELDS}),
    "solar": lambda spec: solar(spec["event"], spec["lat"], spec["lon"]),
    "rrule": lambda spec: Recurrence.from_text(spec["rule"]),
}


def _from_dict(spec: dict[str, Any]) -> Schedule:
    kind = spec.get("type")
    if kind not in _FROM_DICT:
        raise ConfigurationError(
            f"bad schedule {spec!r}: unknown type {kind!r}{did_you_mean(str(kind), _FROM_DICT)};"
            f" one of {', '.join(_FROM_DICT)}"
        )
    try:
        return _FROM_DICT[kind](spec)
    except KeyError as exc:
        raise ConfigurationError(f"bad schedule {spec!r}: no {exc.args[0]!r}") from exc
