"""The dashboard's window of recent tasks: built from task events, bounded by max_tasks
(the oldest leaves first), filtered and paged newest first."""

from __future__ import annotations

from taskq import events, states
from taskq.contrib.dashboard.window import TaskFilter, TaskWindow


def event(kind: str, task_id: str, at: float, **fields: object) -> dict[str, object]:
    return {"type": kind, "uuid": task_id, "timestamp": at, "hostname": "w1@h", **fields}


def test_a_task_s_events_make_one_record_with_its_state_and_timeline() -> None:
    window = TaskWindow(10)
    window.apply(event(events.RECEIVED, "t1", 1.0, name="shop.add", args="[1, 2]", queue="q"))
    window.apply(event(events.STARTED, "t1", 1.5))
    window.apply(event(events.SENT, "t1", 0.9, queue="q"))  # late: it changes no state
    window.apply(event(events.FAILED, "t1", 2.0, exception="ValueError('x')", runtime=0.5))
    record = window.get("t1")
    assert record is not None
    assert (record.state, record.name, record.worker, record.queue) == (
        states.FAILURE,
        "shop.add",
        "w1@h",
        "q",
    )
    assert (record.received, record.started, record.finished, record.runtime) == (
        1.0,
        1.5,
        2.0,
        0.5,
    )
    assert [step["type"] for step in record.timeline] == [
        events.RECEIVED,
        events.STARTED,
        events.SENT,
        events.FAILED,
    ]


def test_the_window_keeps_the_newest_max_tasks() -> None:
    window = TaskWindow(100)
    for number in range(250):
        window.apply(event(events.RECEIVED, f"t{number}", float(number), name="n"))
    assert len(window) == 100
    assert window.get("t149") is None and window.get("t150") is not None
    page, total = window.select(TaskFilter(), offset=0, limit=3)
    assert total == 100 and [record.id for record in page] == ["t249", "t248", "t247"]


def test_filters_and_pages() -> None:
    window = TaskWindow(1000)
    for number in range(120):
        kind = events.SUCCEEDED if number % 3 else events.FAILED
        window.apply(event(events.RECEIVED, f"t{number}", float(number), name=f"app.n{number % 2}"))
        window.apply(event(kind, f"t{number}", float(number) + 0.5))
    failed = TaskFilter(state=states.FAILURE, name="n0")
    page, total = window.select(failed, offset=10, limit=10)
    assert total == 20  # numbers divisible by 6
    assert [record.id for record in page] == [f"t{n}" for n in range(54, -1, -6)]
    recent, count = window.select(TaskFilter(since=100.0), offset=0, limit=50)
    assert count == 20 and recent[-1].id == "t100"
