"""The web dashboard (`pip install 'taskq[dashboard]'`): `taskq dashboard -A app`, or
`create_app(app, auth="user:password")` mounted in a Starlette/FastAPI app (docs/dashboard.md).

It watches the task events (workers run with `-E`) and inspects the workers periodically;
it keeps the newest `max_tasks` tasks in memory and reads older ones from the result store.
"""

from taskq.contrib.dashboard.server import Dashboard, create_app

__all__ = ["Dashboard", "create_app"]
