"""OpenTelemetry tracing for taskq (`pip install 'taskq[otel]'`): one line,
`app.middleware.add(TracingMiddleware())`, in the producers and in the workers.

Publishing a message starts and ends a PRODUCER span, `publish <queue>` (the message's creation
context), and injects its trace context into the message's headers (W3C `traceparent`).
Running it is a CONSUMER span, `process <queue>`, whose parent is that context, so one trace
spans producer and worker; the task's own spans, and what it publishes (a chain's next step, a
chord's callback, a `delay()` inside it), are its children. A retry keeps the first message's
parent and links to the attempt that asked for it. Attributes follow OpenTelemetry's messaging
conventions (`messaging.system` is `taskq`), with `taskq.task.name`, `taskq.task.retries` and
`taskq.task.state`; a failure sets the span's status to ERROR with the exception recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
except ImportError:
    raise ImportError(
        "taskq.contrib.opentelemetry needs OpenTelemetry: pip install 'taskq[otel]'"
    ) from None

from taskq import states
from taskq.execution.job import CallNext, Job, Outcome
from taskq.message import Message
from taskq.middleware import Middleware

RETRY_OF = "taskq-retry-of"  # the header of a retry: the trace context of the attempt before


class TracingMiddleware(Middleware):
    """Spans for publishing and running tasks, on `tracer_provider` (default: the global)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("taskq", tracer_provider=tracer_provider)

    def before_publish(self, message: Message) -> None:
        attributes = _attributes(message, message.queue, "publish", "create")
        with self._tracer.start_as_current_span(
            f"publish {message.queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            propagate.inject(message.headers)

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        message, queue = job.message, job.delivery.queue
        links = _retry_links(message.headers.get(RETRY_OF))
        with self._tracer.start_as_current_span(
            f"process {queue}",
            context=propagate.extract(message.headers),
            kind=SpanKind.CONSUMER,
            attributes=_attributes(message, queue, "process", "process"),
            links=links,
        ) as span:
            outcome = await call_next(job)
            span.set_attribute("taskq.task.state", outcome.status)
            if outcome.status == states.FAILURE and outcome.error is not None:
                span.record_exception(outcome.error)
                span.set_status(Status(StatusCode.ERROR, f"{type(outcome.error).__name__}"))
            if outcome.retry is not None:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                headers = {**outcome.retry.headers, RETRY_OF: carrier}
                outcome.retry = dataclasses.replace(outcome.retry, headers=headers)
            return outcome


def _attributes(message: Message, queue: str, operation: str, kind: str) -> dict[str, Any]:
    return {
        "messaging.system": "taskq",
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": queue,
        "messaging.message.id": message.id,
        "taskq.task.name": message.task,
        "taskq.task.retries": message.retries,
    }


def _retry_links(carrier: object) -> list[Link]:
    if not isinstance(carrier, dict):
        return []
    before = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return [Link(before)] if before.is_valid else []
