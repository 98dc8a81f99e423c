"""Publishing a scenario's tasks from the harness's producer app."""

from __future__ import annotations

from taskq import TaskQ

BATCH = 1000  # messages per publish_many


async def submit_work(app: TaskQ, count: int, seconds: float, first: int = 0) -> dict[str, int]:
    """Publish `count` `chaos.work` tasks (n, seconds); returns id -> the result due (n)."""
    messages = [app.build_message("chaos.work", [n, seconds]) for n in range(first, first + count)]
    for start in range(0, count, BATCH):
        await app.send_messages(messages[start : start + BATCH])
    return {message.id: n for n, message in enumerate(messages, first)}
