"""Beat: periodic tasks (crontab and intervals) with state in the result store."""

from taskq.beat.scheduler import Beat, BeatEntries, Entry
from taskq.beat.schedules import Interval, crontab

__all__ = ["Beat", "BeatEntries", "Entry", "Interval", "crontab"]
