"""crontab parsing and next-run computation, DST included; intervals; bad fields."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskq import crontab
from taskq.beat.schedules import Interval, as_schedule
from taskq.errors import ConfigurationError

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: ZoneInfo | type[UTC] = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        (crontab(), "2026-01-01 10:00:30", "2026-01-01 10:01:00"),
        (crontab(minute="*/15"), "2026-01-01 10:00:00", "2026-01-01 10:15:00"),
        (crontab(minute="*/15"), "2026-01-01 10:50:00", "2026-01-01 11:00:00"),
        (crontab(minute=15, hour=2), "2026-01-01 02:15:00", "2026-01-02 02:15:00"),
        (crontab(minute="5/20"), "2026-01-01 10:06:00", "2026-01-01 10:25:00"),
        (crontab(minute=0, hour="9-17/4"), "2026-01-01 13:00:00", "2026-01-01 17:00:00"),
        (
            crontab(minute=0, hour=9, day_of_week="mon-fri"),
            "2026-01-02 09:00:00",
            "2026-01-05 09:00:00",
        ),
        (
            crontab(minute=0, hour=0, day_of_week="sun"),
            "2026-01-01 00:00:00",
            "2026-01-04 00:00:00",
        ),
        (crontab(minute=0, hour=0, day_of_week=7), "2026-01-01 00:00:00", "2026-01-04 00:00:00"),
        (crontab(minute=0, hour=0, day_of_month=31), "2026-01-31 00:00:00", "2026-03-31 00:00:00"),
        (
            crontab(minute=0, hour=0, day_of_month=29, month_of_year=2),
            "2026-01-01",
            "2028-02-29 00:00:00",
        ),
        (
            crontab(minute=0, hour=12, month_of_year="jan,jul"),
            "2026-01-31 12:00:00",
            "2026-07-01 12:00:00",
        ),
        (crontab(minute="0,30", hour="*"), "2026-12-31 23:45:00", "2027-01-01 00:00:00"),
    ],
)
def test_next_run(schedule: crontab, after: str, expected: str) -> None:
    assert schedule.next_after(at(after)) == at(expected)


def test_dst_start_skips_the_missing_hour() -> None:
    daily = crontab(minute=30, hour=2)  # 02:30 does not exist in Berlin on 2026-03-29
    first = daily.next_after(at("2026-03-28 03:00:00", BERLIN))
    assert first == at("2026-03-30 02:30:00", BERLIN)
    hourly = crontab(minute=0)
    assert hourly.next_after(at("2026-03-29 01:30:00", BERLIN)).astimezone(UTC) == at(
        "2026-03-29 01:00:00"
    )


def test_dst_end_runs_the_repeated_time_once() -> None:
    daily = crontab(minute=30, hour=2)  # 02:30 happens twice in Berlin on 2026-10-25
    first = daily.next_after(at("2026-10-25 00:00:00", BERLIN))
    assert first.astimezone(UTC) == at("2026-10-25 00:30:00")
    second = daily.next_after(first)
    assert second.astimezone(UTC) == at("2026-10-26 01:30:00")


def test_crontab_is_evaluated_in_the_given_zone() -> None:
    nine = crontab(minute=0, hour=9)
    assert nine.next_after(at("2026-06-01 00:00:00", BERLIN)).astimezone(UTC) == at(
        "2026-06-01 07:00:00"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minute": 60}, "outside 0-59"),
        ({"hour": "25"}, "outside 0-23"),
        ({"day_of_week": "funday"}, "unknown name"),
        ({"minute": "*/0"}, "step"),
        ({"hour": "10-2"}, "backwards"),
        ({"minute": "a b"}, "cannot read"),
        ({"month_of_year": 13}, "outside 1-12"),
    ],
)
def test_bad_fields_are_clear_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        crontab(**fields)  # type: ignore[arg-type]


def test_intervals_and_round_trips() -> None:
    assert as_schedule(300.0) == Interval(300.0)
    assert as_schedule(timedelta(seconds=30)) == Interval(30.0)
    start = at("2026-01-01 00:00:00")
    assert Interval(30).next_after(start) == start + timedelta(seconds=30)
    weekly = crontab(minute=15, hour=2, day_of_week="mon-fri")
    assert as_schedule(weekly.to_dict()) == weekly
    assert as_schedule(Interval(5).to_dict()) == Interval(5)
    with pytest.raises(ConfigurationError):
        as_schedule("hourly")
    with pytest.raises(ConfigurationError):
        Interval(0)
