"""Backend URLs: scheme -> implementing class, fail-over lists, and the SQLite URL convention.

Imports nothing of taskq but `errors`.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from taskq.errors import ConfigurationError

_EXTRAS = {"redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp"}


def alternatives(url: str) -> list[str]:
    """The URLs of a fail-over list, Celery's `url1;url2` (one URL: itself)."""
    return [part.strip() for part in url.split(";") if part.strip()]


def load_backend_class(url: str, registry: dict[str, str], kind: str) -> Any:
    """The class registered for `url`'s scheme (every URL of a fail-over list shares it),
    imported on first use."""
    schemes = {urlsplit(part).scheme for part in alternatives(url)}
    if len(schemes) > 1:
        raise ConfigurationError(
            f"the fail-over {kind} URLs {masked_url(url)!r} mix schemes: {sorted(schemes)}"
        )
    scheme = urlsplit(url).scheme
    if "://" not in url or scheme not in registry:
        known = ", ".join(f"{name}://" for name in registry)
        raise ConfigurationError(
            f"unsupported {kind} URL {masked_url(url)!r} (expected one of {known})"
        )
    module_name, class_name = registry[scheme].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme)
        hint = f": pip install 'taskq[{extra}]'" if extra else ""
        raise ConfigurationError(f"the {scheme}:// {kind} is not available ({exc}){hint}") from exc
    return getattr(module, class_name)


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/file.db` is relative to the working directory; `sqlite:////abs.db` is not."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: expected sqlite:///relative/file.db or sqlite:////abs/file.db"
        )
    return Path(url[len(prefix) :])


# A URL's password: after `scheme://user:`, up to the last `@` before a space, a quote or the
# `;` of a fail-over list's next URL (so a password with an unescaped `@` is masked whole, at
# worst with some of the host), and a query parameter whose name holds "password".
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.\-]*://"
_PASSWORDS = re.compile(
    rf"(?P<head>{_SCHEME}[^\s'\"/:@]*:)(?P<password>(?:[^\s'\";]|;(?!{_SCHEME}))*)@"
    r"|(?P<name>[?&][^=&\s'\"]*password[^=&\s'\"]*=)[^&\s'\"]*",
    re.IGNORECASE,
)


_PLACEHOLDER = "password"


def masked_url(text: str) -> str:
    """`text` (a URL, or a line naming URLs) with every URL's password as `***`: fit for a
    log line or an error."""
    if "://" not in text and "password" not in text.lower():
        return text
    return _PASSWORDS.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    head = match["head"]
    if head is None:
        return f"{match['name']}***"
    if match["password"] == _PLACEHOLDER:  # a hint's example URL, as in "redis://:password@"
        return match[0]
    return f"{head}***@"
