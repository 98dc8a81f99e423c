"""How the `taskq` command logs: `text` (the default), `json`, or a `logging` format string
(as Celery's `worker_log_format`).

`JsonFormatter` writes one JSON object per line: `time` (ISO 8601, UTC), `level`, `logger`,
`message`, `worker`; for a line about a task (written while its job goes through the
pipeline: `taskq.execution.logcontext`), `task_id`, `task`, `queue`, `retries` and, when the
message carries a W3C `traceparent` header, `trace_id`; `traceback` when the line has one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from taskq.execution.logcontext import current_job
from taskq.urls import masked_url

TEXT_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"


def configure_logging(level: int, log_format: str = "text", worker: str | None = None) -> None:
    """Log to stderr at `level` in `log_format` (replacing what was configured before)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        handler.setFormatter(MaskingFormatter(TEXT_FORMAT if log_format == "text" else log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines never show a URL's password, whoever logged it (a client
    library's error, a traceback): a second line of defence behind `masked_url` where taskq
    names a URL."""

    def format(self, record: logging.LogRecord) -> str:
        return masked_url(super().format(record))


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str | None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        job = current_job()
        if job is not None:
            message = job.message
            line.update(
                task_id=message.id,
                task=message.task,
                queue=job.delivery.queue,
                retries=message.retries,
            )
            trace_id = _trace_id(message.headers.get("traceparent"))
            if trace_id is not None:
                line["trace_id"] = trace_id
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return masked_url(orjson.dumps(line, default=str).decode())


def _trace_id(traceparent: object) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`)."""
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
