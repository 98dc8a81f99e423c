"""Tasks of the Flask example. Worker:  taskq worker -A tasks:app"""

import time

from taskq import TaskQ

app = TaskQ("reports")  # no URL: ./taskq.db; TASKQ_BROKER_URL=redis://... points it elsewhere


@app.task
def build_report(user: str, month: str) -> dict[str, object]:
    """A plain function: the worker runs it in a thread."""
    time.sleep(0.1)  # stands in for the queries
    return {"user": user, "month": month, "rows": len(user) * 10}
