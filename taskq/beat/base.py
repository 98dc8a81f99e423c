"""What every schedule is: `next_after(last_run)`, the first run strictly after the last one.

`last_run` is an aware datetime: the scheduled time of the entry's last run, or the moment
a beat first saw the entry. A schedule returns an aware datetime, or None when it will never
run again (an rrule's `count` used up).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from taskq.errors import ConfigurationError


class Schedule:
    """Subclass it and override `next_after(last_run)` (or implement Celery's
    `is_due(last_run_at)` instead: see `taskq.beat.custom`).

    A subclass is defined in code, so it lives in `beat_schedule`; only the schedules taskq
    can rebuild from data (`to_dict`) may be stored with `app.beat.add`.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.next_after is Schedule.next_after and not callable(getattr(cls, "is_due", None)):
            raise TypeError(
                f"{cls.__qualname__}: a Schedule defines next_after(last_run), or Celery's"
                " is_due(last_run_at)"
            )

    def next_after(self, last_run: datetime) -> datetime | None:
        raise NotImplementedError(f"{type(self).__qualname__} does not define next_after")

    def first_after(self, seen: datetime) -> datetime | None:
        """The first run of an entry that has never run and that a beat first saw at `seen`."""
        return self.next_after(seen)

    def to_dict(self) -> dict[str, Any]:
        raise not_storable(self)

    def __repr__(self) -> str:
        return f"{code_name(self)} (in code)"


def code_name(schedule: object) -> str:
    """A schedule object's own repr, or `module.Class()` when it has none."""
    kind = type(schedule)
    if kind.__repr__ in (object.__repr__, Schedule.__repr__):
        return f"{kind.__module__}.{kind.__qualname__}()"
    return repr(schedule)


def not_storable(schedule: object) -> ConfigurationError:
    """The error for storing (`app.beat.add`) a schedule only code can rebuild."""
    return ConfigurationError(
        f"{schedule!r} is defined in code and cannot be stored: put its entry in beat_schedule"
    )


def localize(wall: datetime, tz: tzinfo) -> datetime | None:
    """The naive wall time `wall` in `tz` (its first occurrence), or None when DST skips it."""
    aware = wall.replace(tzinfo=tz, fold=0)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        return None
    return aware
