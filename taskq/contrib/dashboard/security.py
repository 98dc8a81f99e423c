"""Who may use the dashboard: basic auth (`user:password`) or a bearer token, compared as
SHA-256 digests in constant time; and what keeps a state-changing POST honest: the CSRF token
every page carries, and read-only mode."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
REALM = 'Basic realm="taskq dashboard", charset="UTF-8"'


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request must present: basic auth, a bearer token, either, or (`open`) nothing."""

    basic: bytes | None = None  # the digest of "user:password"
    token: bytes | None = None  # the digest of the token

    @classmethod
    def parse(cls, auth: str | None, token: str | None) -> Credentials:
        if auth is not None:
            user, colon, password = auth.partition(":")
            if not user or not colon or not password:
                raise ValueError("auth must be 'user:password', both non-empty")
        if token is not None and not token.strip():
            raise ValueError("the auth token must not be empty")
        return cls(
            _digest(auth) if auth is not None else None,
            _digest(token) if token is not None else None,
        )

    @property
    def open(self) -> bool:
        return self.basic is None and self.token is None

    def scheme_of(self, authorization: str) -> str | None:
        """'basic' or 'bearer' for a header that presents valid credentials, else None."""
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return "bearer" if hmac.compare_digest(_digest(value.strip()), self.token) else None
        if scheme == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return "basic" if hmac.compare_digest(_digest(given), self.basic) else None
        return None


class Authenticate:
    """ASGI middleware: a request without valid credentials gets 401 and goes no further.
    `scope["taskq.auth"]` says how the request was let in: basic, bearer or open."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.credentials.open:
            scope["taskq.auth"] = "open"
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme = self.credentials.scheme_of(headers.get(b"authorization", b"").decode("latin-1"))
        if scheme is None:
            challenge = {"WWW-Authenticate": REALM} if self.credentials.basic else {}
            response = PlainTextResponse("401: credentials required", 401, challenge)
            await response(scope, receive, send)
            return
        scope["taskq.auth"] = scheme
        await self.app(scope, receive, send)


class Guard:
    """The CSRF token of this dashboard process, and the checks of a state-changing POST."""

    def __init__(self, read_only: bool) -> None:
        self.read_only = read_only
        self.csrf_token = secrets.token_urlsafe(32)

    def refusal(self, request: Request, form_token: str | None) -> PlainTextResponse | None:
        """Why this POST may not change anything, or None when it may. A bearer token is
        not sent by a browser on its own, so such a request needs no CSRF token."""
        if self.read_only:
            return PlainTextResponse("403: the dashboard is read-only", 403)
        if request.scope.get("taskq.auth") == "bearer":
            return None
        given = request.headers.get(CSRF_HEADER) or form_token or ""
        if not hmac.compare_digest(given.encode(), self.csrf_token.encode()):
            return PlainTextResponse(
                f"403: missing or wrong CSRF token (send the page's {CSRF_FIELD}"
                f" field or an X-CSRF-Token header; GET /api/csrf gives it)",
                403,
            )
        return None
