"""Schedules written in code: a function of the last run, or an object with Celery's `is_due`.

Neither can be stored as data, so their entries live in `beat_schedule` (code every beat
process imports); their state (last run, run count) is stored by entry name like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from taskq.beat.base import Schedule, code_name, not_storable
from taskq.errors import ConfigurationError

NextRun = timedelta | datetime | None


class CallableSchedule(Schedule):
    """`schedule=lambda last_run: timedelta(hours=1)`: the function gets the last run (None
    before the first, which then counts from when a beat first saw the entry) and returns the
    delay until the next run, the next run itself (an aware datetime), or None for no more."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[[datetime | None], NextRun]) -> None:
        self.function = function

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", type(self.function).__qualname__)
        return f"{getattr(self.function, '__module__', '?')}.{name} (in code)"

    def next_after(self, last_run: datetime) -> datetime | None:
        run = self._run_after(last_run, self.function(last_run))
        if run is not None and run <= last_run:
            raise ConfigurationError(
                f"schedule {self!r} gave {run.isoformat()}, not after the last run"
                f" {last_run.isoformat()}"
            )
        return run

    def first_after(self, seen: datetime) -> datetime | None:
        return self._run_after(seen, self.function(None))

    def _run_after(self, since: datetime, answer: object) -> datetime | None:
        if answer is None:
            return None
        if isinstance(answer, timedelta):
            return since + answer
        if isinstance(answer, datetime) and answer.tzinfo is not None:
            return answer
        raise ConfigurationError(
            f"schedule {self!r} returned {answer!r}: expected a timedelta, an aware datetime"
            " or None"
        )


class CelerySchedule(Protocol):
    def is_due(self, last_run_at: datetime) -> tuple[bool, float]: ...


class Polled:
    """An object with Celery's `is_due(last_run_at) -> (is_due, next_time_to_check)`.

    It answers only "due now?", so beat asks it again after `next_time_to_check` seconds
    instead of computing a run time; when due it fires at once."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: CelerySchedule) -> None:
        self.schedule = schedule

    def __repr__(self) -> str:
        return f"{code_name(self.schedule)} (is_due, in code)"

    def poll(self, last_run: datetime) -> tuple[bool, float]:
        answer: Any = self.schedule.is_due(last_run)
        match answer:
            case (bool() as due, int() | float() as check) if check >= 0:
                return due, float(check)
        raise ConfigurationError(
            f"{self.schedule!r}.is_due returned {answer!r}: expected (is_due, seconds until"
            " the next check)"
        )

    def to_dict(self) -> dict[str, Any]:
        raise not_storable(self)
