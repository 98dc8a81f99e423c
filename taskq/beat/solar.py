"""`solar(event, lat, lon)`: Celery's sunrise, sunset, dawn, dusk and solar noon schedules.

The sun's position comes from NOAA's solar calculator equations (the ones behind its
spreadsheet, good to about a minute between the polar circles): the declination and the
equation of time for a moment give solar noon and the hour angle at which the sun's centre
is at an event's depression below the horizon. Each estimate is refined at the time it
gives. A date on which the event does not happen (polar day or night) is passed over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from taskq.beat.base import Schedule
from taskq.errors import ConfigurationError
from taskq.suggest import did_you_mean

# Degrees of the sun's centre below the horizon; sunrise and sunset are refraction (34')
# and the sun's semidiameter (16') below it, as in Celery's `solar`.
_DEPRESSIONS = {
    "dawn_astronomical": 18.0,
    "dawn_nautical": 12.0,
    "dawn_civil": 6.0,
    "sunrise": 0.833,
    "sunset": 0.833,
    "dusk_civil": 6.0,
    "dusk_nautical": 12.0,
    "dusk_astronomical": 18.0,
}
EVENTS = (*_DEPRESSIONS, "solar_noon")
_J2000 = datetime(2000, 1, 1, 12, tzinfo=UTC)
_REFINEMENTS = 3
# Past the polar circles an event can stay away for months, at a pole for most of a year.
_SEARCH_DAYS = 400


@dataclass(frozen=True, slots=True)
class _Sun:
    declination: float  # radians
    equation_of_time: float  # minutes


@dataclass(frozen=True, slots=True)
class solar(Schedule):  # named as Celery's, beside crontab
    """`solar("sunset", 52.52, 13.40)`: every day at the event, at latitude and longitude
    (degrees, north and east positive)."""

    event: str
    lat: float
    lon: float

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ConfigurationError(
                f"unknown solar event {self.event!r}{did_you_mean(self.event, EVENTS)};"
                f" one of {', '.join(EVENTS)}"
            )
        for name, value in (("latitude", self.lat), ("longitude", self.lon)):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigurationError(f"solar {name} must be a number of degrees, not {value!r}")
        if not -90 <= self.lat <= 90:
            raise ConfigurationError(f"solar latitude {self.lat} is outside -90..90")
        if not -180 <= self.lon <= 180:
            raise ConfigurationError(f"solar longitude {self.lon} is outside -180..180")

    def __repr__(self) -> str:
        return f"solar({self.event!r}, {self.lat}, {self.lon})"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "solar", "event": self.event, "lat": self.lat, "lon": self.lon}

    def next_after(self, last_run: datetime) -> datetime:
        first_day = datetime.combine(last_run.astimezone(UTC).date(), datetime.min.time(), UTC)
        for days in range(-1, _SEARCH_DAYS):
            moment = self._on(first_day + timedelta(days=days))
            if moment is not None and moment > last_run:
                return moment.astimezone(last_run.tzinfo)
        raise ConfigurationError(f"{self!r} does not happen within {_SEARCH_DAYS} days")

    def _on(self, day: datetime) -> datetime | None:
        """The event on the UTC date `day` (midnight), or None when it does not happen."""
        noon = day + timedelta(hours=12, minutes=-4 * self.lon)
        moment = noon
        for _ in range(_REFINEMENTS):
            sun = _sun_at(moment)
            cos_hour_angle = self._cos_hour_angle(sun)
            if not -1 <= cos_hour_angle <= 1:
                return self._crossing(noon)
            moment = day + timedelta(minutes=self._minutes(sun, cos_hour_angle))
        return moment.replace(microsecond=0)

    def _cos_hour_angle(self, sun: _Sun) -> float:
        """The cosine of the hour angle of the event (no event outside -1..1)."""
        if self.event == "solar_noon":
            return 1.0
        lat = math.radians(self.lat)
        zenith = math.radians(90 + _DEPRESSIONS[self.event])
        return math.cos(zenith) / (math.cos(lat) * math.cos(sun.declination)) - math.tan(
            lat
        ) * math.tan(sun.declination)

    def _minutes(self, sun: _Sun, cos_hour_angle: float) -> float:
        """Minutes from UTC midnight to the event, given its hour angle."""
        offset = 4 * math.degrees(math.acos(cos_hour_angle))
        noon = 720 - 4 * self.lon - sun.equation_of_time
        return noon - offset if self._rising else noon + offset

    @property
    def _rising(self) -> bool:
        return self.event.startswith(("dawn", "sunrise"))

    def _crossing(self, noon: datetime) -> datetime | None:
        """The event on a day the hour angle cannot give it: on the day polar night or day
        begins or ends, and near a pole, the sun can go from below the event's depression to
        above it (or back) as its declination changes within the day. The event is then the
        moment it crosses, found by bisection over the day (noon +- 12 h); otherwise None."""
        low, high = noon - timedelta(hours=12), noon + timedelta(hours=12)
        above_at_end = self._sun_is_above(high)
        if self._sun_is_above(low) == above_at_end or above_at_end != self._rising:
            return None
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if self._sun_is_above(middle) == self._rising:
                high = middle
            else:
                low = middle
        return high.replace(microsecond=0)

    def _sun_is_above(self, moment: datetime) -> bool:
        """Whether the sun's centre is above the event's depression at `moment`."""
        sun = _sun_at(moment)
        lat = math.radians(self.lat)
        utc_minutes = (moment - moment.replace(hour=0, minute=0, second=0, microsecond=0)) / (
            timedelta(minutes=1)
        )
        hour_angle = math.radians((utc_minutes + sun.equation_of_time + 4 * self.lon) / 4 - 180)
        cos_zenith = math.sin(lat) * math.sin(sun.declination) + math.cos(lat) * math.cos(
            sun.declination
        ) * math.cos(hour_angle)
        return cos_zenith > math.cos(math.radians(90 + _DEPRESSIONS[self.event]))


def _sun_at(moment: datetime) -> _Sun:
    """NOAA's declination and equation of time at `moment`."""
    t = (moment - _J2000).total_seconds() / 86400 / 36525  # Julian centuries since J2000
    mean_longitude = math.radians((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360)
    anomaly = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = math.radians(
        math.sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + math.sin(2 * anomaly) * (0.019993 - 0.000101 * t)
        + math.sin(3 * anomaly) * 0.000289
    )
    node = math.radians(125.04 - 1934.136 * t)
    apparent_longitude = mean_longitude + centre - math.radians(0.00569 + 0.00478 * math.sin(node))
    seconds = 21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))
    obliquity = math.radians(23 + (26 + seconds / 60) / 60 + 0.00256 * math.cos(node))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent_longitude))
    y = math.tan(obliquity / 2) ** 2
    equation = (
        y * math.sin(2 * mean_longitude)
        - 2 * eccentricity * math.sin(anomaly)
        + 4 * eccentricity * y * math.sin(anomaly) * math.cos(2 * mean_longitude)
        - 0.5 * y * y * math.sin(4 * mean_longitude)
        - 1.25 * eccentricity * eccentricity * math.sin(2 * anomaly)
    )
    return _Sun(declination, 4 * math.degrees(equation))
