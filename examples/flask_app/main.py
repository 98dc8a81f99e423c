"""A Flask app whose views use taskq's blocking calls:  flask --app main run

POST /reports           {"user": str, "month": str} -> 202 {"task_id": ...}
GET  /tasks/<task_id>   -> {"id", "state"} and, once it succeeded, "result"
"""

from flask import Flask, request
from tasks import app, build_report

from taskq import states

web = Flask(__name__)


@web.post("/reports")
def create_report() -> tuple[dict[str, str], int]:
    body = request.get_json(silent=True) or {}
    user, month = body.get("user"), body.get("month")
    if not isinstance(user, str) or not isinstance(month, str):
        return {"error": 'expected a JSON body {"user": "...", "month": "..."}'}, 400
    result = build_report.delay_sync(user, month)  # blocks until published, not until run
    return {"task_id": result.id}, 202


@web.get("/tasks/<task_id>")
def get_task(task_id: str) -> dict[str, object]:
    result = app.SyncResult(task_id)
    view: dict[str, object] = {"id": task_id, "state": result.status()}
    if view["state"] == states.SUCCESS:
        view["result"] = result.get(timeout=5)
    return view
