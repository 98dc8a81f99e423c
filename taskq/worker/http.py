"""A small HTTP server in a thread of its own, for probes and scrapes: it answers while the
event loop is busy (or blocked, which is what /healthz reports)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a route answers: (HTTP status, content type, body).
Response = tuple[int, str, bytes]
Route = Callable[[], Response]


class HttpServer:
    """Serves GET `routes` on `port` (every interface) from a daemon thread once started."""

    def __init__(self, port: int, routes: Mapping[str, Route]) -> None:
        handler = type("Handler", (_Handler,), {"routes": dict(routes)})
        try:
            self._server = ThreadingHTTPServer(("", port), handler)
        except OSError as exc:
            raise OSError(f"cannot serve HTTP on port {port}: {exc.strerror or exc}") from None
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"taskq-http-{self.port}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (blocks until the thread is done: call it off the event loop)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Route]

    def do_GET(self) -> None:
        route = self.routes.get(self.path.partition("?")[0])
        if route is None:
            status, content_type, body = 404, "text/plain", b"not found\n"
        else:
            status, content_type, body = route()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: not logged."""
