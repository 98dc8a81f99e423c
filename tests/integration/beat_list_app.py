"""An app whose beat_schedule holds every kind of schedule, for `taskq beat --list`.

The broker comes from TASKQ_BROKER_URL, as for itest_tasks.
"""

from datetime import UTC, datetime, timedelta

from taskq import TaskQ, crontab, solar
from taskq.beat import Schedule, rrule

app = TaskQ("beatlist")


class NewYear2031(Schedule):
    def next_after(self, last_run: datetime) -> datetime:
        return datetime(2031, 1, 1, tzinfo=UTC)


class CheckHourly:
    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        return False, 3600.0

    def __repr__(self) -> str:
        return "CheckHourly()"


app.conf.beat_schedule = {
    name: {"task": "noop", "schedule": schedule}
    for name, schedule in {
        "cron": crontab(minute=15, hour=2),
        "sunset": solar("sunset", 51.5074, -0.1278),
        "monthly": rrule("monthly", dtstart=datetime(2030, 1, 31, 9)),
        "used-up": rrule("daily", dtstart=datetime(2020, 1, 1), count=2),
        "function": lambda last_run: timedelta(hours=1),
        "subclass": NewYear2031(),
        "is-due": CheckHourly(),
    }.items()
}
