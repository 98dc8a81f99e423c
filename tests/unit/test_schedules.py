"""Next-run math of solar events, rrules and schedules written in code; their bad input."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule as dateutil_rrule

from taskq import solar
from taskq.beat import Schedule, rrule
from taskq.beat.custom import Polled
from taskq.beat.schedules import as_schedule
from taskq.errors import ConfigurationError

BERLIN = ZoneInfo("Europe/Berlin")
LONDON = (51.5074, -0.1278)
SYDNEY = (-33.8688, 151.2093)
TROMSO = (69.6496, 18.9560)


def at(text: str, tz: ZoneInfo | type[UTC] = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "place", "after", "published"),
    [  # published times, to the minute, in local time
        ("sunrise", LONDON, "2024-06-21 00:00+01:00", "2024-06-21 04:43+01:00"),
        ("sunset", LONDON, "2024-06-21 00:00+01:00", "2024-06-21 21:21+01:00"),
        ("sunrise", LONDON, "2024-12-21 00:00+00:00", "2024-12-21 08:04+00:00"),
        ("sunset", LONDON, "2024-12-21 00:00+00:00", "2024-12-21 15:53+00:00"),
        ("solar_noon", LONDON, "2024-12-21 00:00+00:00", "2024-12-21 11:58+00:00"),
        ("sunrise", SYDNEY, "2024-12-21 00:00+11:00", "2024-12-21 05:41+11:00"),
        ("sunset", SYDNEY, "2024-12-21 00:00+11:00", "2024-12-21 20:05+11:00"),
    ],
)
def test_solar_events_match_published_times(
    event: str, place: tuple[float, float], after: str, published: str
) -> None:
    run = solar(event, *place).next_after(datetime.fromisoformat(after))
    assert abs(run - datetime.fromisoformat(published)) < timedelta(minutes=1.5), run


def test_twilight_comes_before_sunrise_and_after_sunset() -> None:
    day = at("2024-03-20 00:00")
    dawns = [solar(f"dawn_{kind}", *LONDON).next_after(day) for kind in
             ("astronomical", "nautical", "civil")]  # fmt: skip
    dusks = [solar(f"dusk_{kind}", *LONDON).next_after(day) for kind in
             ("civil", "nautical", "astronomical")]  # fmt: skip
    sunrise, sunset = (solar(event, *LONDON).next_after(day) for event in ("sunrise", "sunset"))
    assert dawns == sorted(dawns) and dawns[-1] < sunrise < sunset < dusks[0]
    assert dusks == sorted(dusks) and all(moment.date() == day.date() for moment in dusks)


def test_each_run_is_the_next_days_event() -> None:
    sunrise = solar("sunrise", *LONDON)
    first = sunrise.next_after(at("2026-01-01 12:00"))
    second = sunrise.next_after(first)
    assert first.date().isoformat() == "2026-01-02" and second.date().isoformat() == "2026-01-03"
    assert sunrise.next_after(first - timedelta(seconds=1)) == first


def test_polar_night_and_midnight_sun_move_to_the_next_date_the_event_happens() -> None:
    # Tromsø: no sunrise from late November until mid-January, no sunset from mid-May until the
    # night of 25-26 July (the last day is a matter of minutes, so either side of midnight).
    sunrise = solar("sunrise", *TROMSO).next_after(at("2026-12-01 00:00"))
    assert at("2027-01-14 00:00") < sunrise < at("2027-01-17 00:00")
    sunset = solar("sunset", *TROMSO).next_after(at("2026-06-01 00:00"))
    assert at("2026-07-25 12:00") < sunset < at("2026-07-27 00:00")
    # London has no astronomical night around midsummer.
    dusk = solar("dusk_astronomical", *LONDON).next_after(at("2024-06-21 00:00"))
    assert at("2024-07-15 00:00") < dusk < at("2024-07-31 00:00")


def test_at_the_pole_the_sun_rises_once_a_year() -> None:
    sunrise = solar("sunrise", 90, 0).next_after(at("2026-01-01 00:00"))
    sunset = solar("sunset", 90, 0).next_after(sunrise)
    assert sunrise.date().isoformat().startswith("2026-03-1")  # the March equinox
    assert sunset.date().isoformat().startswith("2026-09-2")  # the September one


def test_solar_runs_are_given_in_the_zone_of_the_last_run() -> None:
    run = solar("sunrise", *LONDON).next_after(at("2026-06-01 00:00", BERLIN))
    assert run.tzinfo == BERLIN


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sunsett", 0, 0), "unknown solar event 'sunsett' \\(did you mean 'sunset'\\?\\)"),
        (("sunset", 91, 0), "latitude 91 is outside -90..90"),
        (("sunset", 0, -181), "longitude -181 is outside -180..180"),
        (("sunset", "52", 0), "latitude must be a number of degrees, not '52'"),
    ],
)
def test_bad_solar_arguments_are_clear_errors(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        solar(*args)  # type: ignore[arg-type]


def test_rrule_runs_on_the_wall_clock_of_the_app_timezone() -> None:
    mornings = rrule("weekly", dtstart=datetime(2026, 1, 5, 9, 30), byweekday=(0, 3))  # Mon, Thu
    assert mornings.next_after(at("2026-01-05 09:30", BERLIN)) == at("2026-01-08 09:30", BERLIN)
    assert mornings.next_after(at("2026-01-08 08:00")) == at("2026-01-08 09:30")
    assert mornings.next_after(at("2025-12-01 00:00")) == at("2026-01-05 09:30")  # dtstart


def test_rrule_skips_a_time_dst_skips_and_runs_a_repeated_one_once() -> None:
    nightly = rrule("daily", dtstart=datetime(2026, 3, 1, 2, 30))
    assert nightly.next_after(at("2026-03-28 03:00", BERLIN)) == at("2026-03-30 02:30", BERLIN)
    first = nightly.next_after(at("2026-10-25 00:00", BERLIN))
    assert first.astimezone(UTC) == at("2026-10-25 00:30")  # the first 02:30
    assert nightly.next_after(first).astimezone(UTC) == at("2026-10-26 01:30")


def test_an_rrule_whose_count_is_used_up_never_runs_again() -> None:
    three = rrule("hourly", dtstart=datetime(2026, 1, 1), count=3)
    assert three.next_after(at("2026-01-01 01:00")) == at("2026-01-01 02:00")
    assert three.next_after(at("2026-01-01 02:00")) is None


def test_a_dateutil_rrule_is_a_schedule_and_round_trips_through_its_stored_form() -> None:
    rule = dateutil_rrule.rrule(dateutil_rrule.MONTHLY, dtstart=datetime(2026, 1, 31, 8), count=5)
    schedule = as_schedule(rule)
    assert schedule.next_after(at("2026-01-31 08:00")) == at("2026-03-31 08:00")  # no Feb 31
    stored = schedule.to_dict()
    assert stored["type"] == "rrule" and "FREQ=MONTHLY" in stored["rule"]
    assert as_schedule(stored) == schedule
    assert repr(schedule) == "rrule('DTSTART:20260131T080000 RRULE:FREQ=MONTHLY;COUNT=5')"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rrule("daly", dtstart=datetime(2026, 1, 1)), "did you mean 'daily'"),
        (lambda: rrule("daily", dtstart=datetime(2026, 1, 1), byhuor=9), "byhuor"),
        (lambda: rrule("daily", dtstart=datetime(2026, 1, 1, tzinfo=UTC)), "naive dtstart"),
        (lambda: as_schedule({"type": "rrule", "rule": "FREQ=SOMETIMES"}), "bad rrule"),
    ],
)
def test_bad_rrules_are_clear_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


def test_without_dateutil_an_rrule_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dateutil", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'taskq\[rrule\]'"):
        rrule("daily", dtstart=datetime(2026, 1, 1))


def test_a_function_gives_the_delay_after_the_last_run_or_the_next_run() -> None:
    hourly = as_schedule(lambda last_run: timedelta(hours=1))
    assert isinstance(hourly, Schedule)
    assert hourly.next_after(at("2026-01-01 10:00")) == at("2026-01-01 11:00")
    nine = as_schedule(lambda last_run: at("2026-01-02 09:00"))
    assert isinstance(nine, Schedule) and nine.next_after(at("2026-01-01")) == at(
        "2026-01-02 09:00"
    )


def test_a_function_gets_none_before_the_first_run() -> None:
    seen: list[datetime | None] = []

    def at_once_then_hourly(last_run: datetime | None) -> timedelta:
        seen.append(last_run)
        return timedelta(0) if last_run is None else timedelta(hours=1)

    schedule = as_schedule(at_once_then_hourly)
    assert isinstance(schedule, Schedule)
    assert schedule.first_after(at("2026-01-01 10:00")) == at("2026-01-01 10:00")
    assert schedule.next_after(at("2026-01-01 10:00")) == at("2026-01-01 11:00")
    assert seen == [None, at("2026-01-01 10:00")]


def test_a_function_returning_none_stops_the_entry() -> None:
    schedule = as_schedule(lambda last_run: None)
    assert isinstance(schedule, Schedule) and schedule.next_after(at("2026-01-01")) is None


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (5, "returned 5: expected a timedelta, an aware datetime or None"),
        (datetime(2026, 1, 2), "an aware datetime"),
        (timedelta(0), "not after the last run"),
        (at("2025-12-31"), "not after the last run"),
    ],
)
def test_a_function_returning_something_else_is_a_clear_error(answer: object, message: str) -> None:
    schedule = as_schedule(lambda last_run: answer)
    assert isinstance(schedule, Schedule)
    with pytest.raises(ConfigurationError, match=message):
        schedule.next_after(at("2026-01-01"))


class EveryTenMinutes(Schedule):
    def next_after(self, last_run: datetime) -> datetime:
        return last_run.replace(second=0, microsecond=0) + timedelta(
            minutes=10 - last_run.minute % 10
        )


class DueEveryOtherCheck:
    """Celery's shape: is_due(last_run_at) -> (is_due, seconds until the next check)."""

    def __init__(self) -> None:
        self.checks = 0

    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        self.checks += 1
        return self.checks % 2 == 0, 30.0


class CelerySubclass(Schedule):
    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        return True, 60


def test_a_schedule_subclass_computes_its_own_runs() -> None:
    schedule = as_schedule(EveryTenMinutes())
    assert schedule.next_after(at("2026-01-01 10:07:30")) == at("2026-01-01 10:10")  # type: ignore[union-attr]
    assert schedule.next_after(at("2026-01-01 10:10")) == at("2026-01-01 10:20")  # type: ignore[union-attr]


def test_an_object_with_is_due_is_polled() -> None:
    polled = as_schedule(DueEveryOtherCheck())
    assert isinstance(polled, Polled)
    assert [polled.poll(at("2026-01-01")) for _ in range(2)] == [(False, 30.0), (True, 30.0)]
    subclass = as_schedule(CelerySubclass())
    assert isinstance(subclass, Polled) and subclass.poll(at("2026-01-01")) == (True, 60.0)
    assert repr(polled) == "test_schedules.DueEveryOtherCheck() (is_due, in code)"
    assert repr(subclass) == "test_schedules.CelerySubclass() (is_due, in code)"
    assert repr(as_schedule(EveryTenMinutes())) == "test_schedules.EveryTenMinutes() (in code)"


def test_an_is_due_answer_of_another_shape_is_a_clear_error() -> None:
    class Wrong:
        def is_due(self, last_run_at: datetime) -> object:
            return True

    polled = as_schedule(Wrong())
    assert isinstance(polled, Polled)
    with pytest.raises(ConfigurationError, match=r"is_due returned True: expected \(is_due"):
        polled.poll(at("2026-01-01"))


def test_schedules_in_code_cannot_be_stored() -> None:
    for schedule in (lambda last_run: timedelta(hours=1), EveryTenMinutes(), DueEveryOtherCheck()):
        with pytest.raises(ConfigurationError, match="defined in code and cannot be stored"):
            as_schedule(schedule).to_dict()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Schedule(), "Schedule must override next_after\\(last_run\\) or define is_due"),
        (EveryTenMinutes, "bad schedule"),  # the class, not an instance
        ({"type": "solr", "event": "sunset"}, "unknown type 'solr' \\(did you mean 'solar'\\?\\)"),
        ({"type": "solar", "event": "sunset", "lat": 1}, "no 'lon'"),
    ],
)
def test_bad_schedules_are_clear_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        as_schedule(value)


def test_solar_round_trips_through_its_stored_form() -> None:
    sunset = solar("sunset", *LONDON)
    assert as_schedule(sunset.to_dict()) == sunset
    assert repr(sunset) == "solar('sunset', 51.5074, -0.1278)"


def test_a_schedule_subclass_that_defines_neither_method_is_refused_at_once() -> None:
    with pytest.raises(TypeError, match=r"Nothing: a Schedule defines next_after\(last_run\)"):

        class Nothing(Schedule):
            pass
