"""The supervisor's `--metrics-port` (`taskq worker --processes N --metrics-port P`): one port
for the whole worker. Each child serves its own metrics and probes on a loopback-chosen port of
its own (`free_port`, passed as its `--metrics-port`); the supervisor serves P from a thread
(`taskq.worker.http`) and answers each request by asking every child.

/metrics is the children's series together, each with a `worker` label naming its child
(`w-1`, `w-2`): series of every kind stay correct — summing a queue's length sampled by each
child would not be — and `sum without (worker)` is the whole worker's. A child that does not
answer is left out, and `taskq_supervisor_scrape_errors` counts it. /healthz and /readyz are
200 when every child's is, else 503 naming the first that is not and why.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from taskq.worker.http import HttpServer, Response

CHILD_TIMEOUT = 2.0  # seconds a child has to answer a scrape or a probe


def free_port() -> int:
    """A TCP port free on this machine now (the kernel's choice), for a child to bind."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MergedScrape:
    """Serves `port` from the children's ports: {child name: port}."""

    def __init__(self, port: int, children: Mapping[str, int]) -> None:
        from taskq.worker.metrics import prometheus_registry

        prometheus_registry()  # a one-line error without the extra, before anything starts
        self.children = dict(children)
        routes = {
            "/metrics": self.metrics,
            "/healthz": lambda: self._probe("/healthz"),
            "/readyz": lambda: self._probe("/readyz"),
        }
        self._server = HttpServer(port, routes)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def metrics(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        pages: dict[str, str] = {}
        for name, port in self.children.items():
            status, body = _get(port, "/metrics")
            if status == 200:
                pages[name] = body
        return 200, CONTENT_TYPE_LATEST, merge(pages, len(self.children) - len(pages))

    def _probe(self, path: str) -> Response:
        for name, port in self.children.items():
            status, body = _get(port, path)
            if status != 200:
                text = f"{name}: {body.strip() or 'no answer'}\n"
                return 503, "text/plain; charset=utf-8", text.encode()
        return 200, "text/plain; charset=utf-8", b"ok\n"


def merge(pages: Mapping[str, str], errors: int = 0) -> bytes:
    """The families of every page, each sample labelled with the worker it came from."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for worker, text in pages.items():
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            merged.samples += [
                sample._replace(labels={**sample.labels, "worker": worker})
                for sample in family.samples
            ]
    failed = GaugeMetricFamily(
        "taskq_supervisor_scrape_errors", "Worker processes that did not answer this scrape."
    )
    failed.add_metric([], errors)
    families[failed.name] = failed

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    data: bytes = generate_latest(registry)
    return data


def _get(port: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=CHILD_TIMEOUT) as answer:
            status: int = answer.status
            return status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        reason: Any = getattr(exc, "reason", exc)
        return 0, f"no answer ({reason})"
