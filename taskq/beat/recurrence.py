"""rrule schedules: python-dateutil's `rrule` as an entry's schedule (the `taskq[rrule]` extra).

A rule is evaluated on the wall clock of the app's `timezone`, as a crontab is: its dtstart
is naive, a time DST skips does not run, a time DST repeats runs once. Stored as its RFC 5545
text (`str(rule)`), which `rrulestr` reads back.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskq.beat.base import Schedule, localize
from taskq.errors import ConfigurationError
from taskq.suggest import did_you_mean

if TYPE_CHECKING:
    from dateutil.rrule import rrule as RRule

_FREQUENCIES = ("yearly", "monthly", "weekly", "daily", "hourly", "minutely", "secondly")


def _dateutil_rrule() -> Any:
    try:
        from dateutil import rrule
    except ImportError as exc:
        raise ConfigurationError(
            "rrule schedules need python-dateutil: pip install 'taskq[rrule]'"
        ) from exc
    return rrule


class Recurrence(Schedule):
    """A `dateutil.rrule.rrule` with a naive dtstart, run on the app's wall clock."""

    __slots__ = ("rule",)

    def __init__(self, rule: RRule) -> None:
        first = next(iter(rule), None)
        if first is not None and first.tzinfo is not None:
            raise ConfigurationError(
                f"rrule {_one_line(rule)}: give it a naive dtstart, it runs on the wall clock"
                " of the app's timezone"
            )
        self.rule = rule

    def __repr__(self) -> str:
        return f"rrule({_one_line(self.rule)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recurrence) and str(other.rule) == str(self.rule)

    def __hash__(self) -> int:
        return hash(str(self.rule))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "rrule", "rule": str(self.rule)}

    @classmethod
    def from_text(cls, text: str) -> Recurrence:
        try:
            rule = _dateutil_rrule().rrulestr(text)
        except ValueError as exc:
            raise ConfigurationError(f"bad rrule {text!r}: {exc}") from exc
        if not isinstance(rule, _dateutil_rrule().rrule):
            raise ConfigurationError(f"bad rrule {text!r}: one RRULE, not a set")
        return cls(rule)

    def next_after(self, last_run: datetime) -> datetime | None:
        tz = last_run.tzinfo
        assert tz is not None  # beat's moments are aware
        cursor = last_run.replace(tzinfo=None)
        while (wall := self.rule.after(cursor)) is not None:
            run = localize(wall, tz)
            if run is not None and run > last_run:
                return run
            cursor = wall
        return None  # the rule's count or until is used up


def rrule(freq: str, dtstart: datetime, **rules: Any) -> Recurrence:
    """`rrule("weekly", dtstart=datetime(2026, 1, 5, 9), byweekday=(0, 3))`: dateutil's rrule
    with the frequency by name; dtstart is required, so every beat counts from the same one."""
    module = _dateutil_rrule()
    name = freq.lower()
    if name not in _FREQUENCIES:
        raise ConfigurationError(
            f"unknown rrule frequency {freq!r}{did_you_mean(name, _FREQUENCIES)};"
            f" one of {', '.join(_FREQUENCIES)}"
        )
    try:
        rule = module.rrule(getattr(module, name.upper()), dtstart=dtstart, **rules)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad rrule({freq!r}, ...): {exc}") from exc
    return Recurrence(rule)


def is_rrule(value: object) -> bool:
    """Whether `value` is a dateutil rrule (without importing dateutil when nobody did)."""
    module = sys.modules.get("dateutil.rrule")
    return module is not None and isinstance(value, module.rrule)


def _one_line(rule: RRule) -> str:
    return str(rule).replace("\n", " ")
