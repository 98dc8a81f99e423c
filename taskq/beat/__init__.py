"""Beat: periodic tasks (crontab, intervals, solar events, rrules and schedules in code) with
state in the result store."""

from taskq.beat.base import Schedule
from taskq.beat.recurrence import rrule
from taskq.beat.scheduler import Beat, BeatEntries, Entry
from taskq.beat.schedules import Interval, crontab
from taskq.beat.solar import solar

__all__ = ["Beat", "BeatEntries", "Entry", "Interval", "Schedule", "crontab", "rrule", "solar"]
