"""OpenTelemetry (taskq.contrib.opentelemetry) with an in-process worker on each broker: one
trace from the producer's publish through the worker's run, retries linked, a chain's steps in
the same trace; spans read from the SDK's in-memory exporter."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskq import TaskError, TaskQ, chain
from taskq.contrib.opentelemetry import TracingMiddleware
from taskq.testing import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
async def app(app_settings: dict[str, Any], exporter: InMemorySpanExporter) -> AsyncIterator[TaskQ]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = TaskQ("traced", **app_settings)
    app.middleware.add(TracingMiddleware(tracer_provider=provider))
    async with app:
        yield app


def spans_of(exporter: InMemorySpanExporter, task_id: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.attributes and span.attributes.get("messaging.message.id") == task_id
    ]


async def test_one_trace_from_publish_to_run_with_retries_linked_and_failures_marked(
    app: TaskQ, exporter: InMemorySpanExporter
) -> None:
    queue = app.conf.task_default_queue

    @app.task(bind=True)
    async def flaky(self: Any) -> int:  # type: ignore[misc]
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return int(self.request.retries)

    @app.task
    async def broken() -> None:
        raise ValueError("nope")

    async with running_worker(app):
        retried = await flaky.delay()
        assert await retried.get(timeout=15) == 1
        failed = await broken.delay()
        with pytest.raises(TaskError):
            await failed.get(timeout=15)

    publish, first, second = sorted(spans_of(exporter, retried.id), key=lambda s: s.start_time or 0)
    assert (publish.name, publish.kind) == (f"publish {queue}", SpanKind.PRODUCER)
    assert [(s.name, s.kind) for s in (first, second)] == [
        (f"process {queue}", SpanKind.CONSUMER)
    ] * 2
    assert publish.context and first.context and second.context
    trace_id = publish.context.trace_id
    assert {first.context.trace_id, second.context.trace_id} == {trace_id}
    assert first.parent and second.parent
    assert first.parent.span_id == second.parent.span_id == publish.context.span_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert first.attributes and second.attributes
    assert (first.attributes["taskq.task.state"], second.attributes["taskq.task.state"]) == (
        "RETRY",
        "SUCCESS",
    )
    assert second.attributes["taskq.task.retries"] == 1
    assert second.attributes["messaging.system"] == "taskq"
    assert second.attributes["messaging.destination.name"] == queue
    [run] = [s for s in spans_of(exporter, failed.id) if s.kind == SpanKind.CONSUMER]
    assert run.status.status_code == StatusCode.ERROR
    assert [event.name for event in run.events] == ["exception"]


async def test_a_chains_next_step_is_published_inside_the_step_before(
    app: TaskQ, exporter: InMemorySpanExporter
) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with running_worker(app):
        result = await chain(add.s(1, 1), add.s(10)).apply_async()
        assert await result.get(timeout=15) == 12

    spans = exporter.get_finished_spans()
    assert len({span.context.trace_id for span in spans if span.context}) == 1
    runs = [s for s in spans if s.kind == SpanKind.CONSUMER]
    publishes = [s for s in spans if s.kind == SpanKind.PRODUCER]
    assert (len(runs), len(publishes)) == (2, 2)
    first_run = min(runs, key=lambda s: s.start_time or 0)
    second_publish = max(publishes, key=lambda s: s.start_time or 0)
    assert first_run.context and second_publish.parent
    assert second_publish.parent.span_id == first_run.context.span_id


def test_without_opentelemetry_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "taskq.contrib.opentelemetry")
    with pytest.raises(ImportError, match=r"needs OpenTelemetry: pip install 'taskq\[otel\]'$"):
        importlib.import_module("taskq.contrib.opentelemetry")
