"""TLS to Redis and RabbitMQ: Celery's `broker_use_ssl` and `redis_backend_use_ssl`, checked,
as redis-py's keyword arguments or as an `ssl.SSLContext` for aio-pika; and what a failed
handshake means, in one line.

The options are Celery's: `ssl_cert_reqs` (`required`, the default, `optional` or `none`, or
an `ssl.CERT_*`), `ssl_ca_certs` (the CA file that signed the server's certificate),
`ssl_certfile` and `ssl_keyfile` (the client's certificate and key, when the server asks for
one), and `ssl_check_hostname`; for RabbitMQ also without the `ssl_` prefix, as Celery's
py-amqp takes them (`ca_certs`, `certfile`, `keyfile`, `cert_reqs`). `True` is TLS with the
system's CAs. They apply only to a TLS URL (`rediss://`, `amqps://`): given with another
they are an error, not ignored. A `rediss://` URL may carry the same options in its query
(`?ssl_ca_certs=/etc/ca.pem`), which redis-py reads.

Imports nothing of taskq but `errors`, `suggest` and `urls`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from taskq.errors import ConfigurationError, TLSError
from taskq.suggest import did_you_mean
from taskq.urls import masked_url

if TYPE_CHECKING:
    from taskq.config import Settings

TLS_SCHEMES = frozenset({"rediss", "amqps"})
OPTIONS = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)
_PY_AMQP_NAMES = {name.removeprefix("ssl_"): name for name in OPTIONS}
_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """What a client checks of the server and shows of itself."""

    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    @classmethod
    def read(
        cls, given: Mapping[str, Any] | bool | None, setting: str, url: str | None = None
    ) -> TLSOptions | None:
        """The options of `setting` (None when it is unset or False), for a connection to
        `url`, which must then be a TLS URL."""
        if given is None or given is False:
            return None
        if url is not None and urlsplit(url).scheme not in TLS_SCHEMES:
            raise ConfigurationError(
                f"{setting} is set, but {masked_url(url)!r} is not a TLS URL (rediss://, amqps://)"
            )
        if given is True:
            return cls()
        if not isinstance(given, Mapping):
            raise ConfigurationError(
                f"{setting} must be a dict of TLS options or True, not {given!r}"
            )
        options: dict[str, Any] = {}
        for name, value in given.items():
            key = _PY_AMQP_NAMES.get(name, name)
            if key not in OPTIONS:
                raise ConfigurationError(
                    f"{setting}: unknown option {name!r}{did_you_mean(name, OPTIONS)}"
                )
            options[key.removeprefix("ssl_")] = value
        for name in ("ca_certs", "certfile", "keyfile"):
            if not isinstance(options.get(name, ""), str):
                raise ConfigurationError(f"{setting}: ssl_{name} must be a file's path")
        if "cert_reqs" in options:
            options["cert_reqs"] = _cert_reqs(options["cert_reqs"], setting)
        if "check_hostname" in options and not isinstance(options["check_hostname"], bool):
            raise ConfigurationError(f"{setting}: ssl_check_hostname must be True or False")
        if options.get("cert_reqs") == ssl.CERT_NONE:
            options.setdefault("check_hostname", False)  # nothing is checked
        if ("keyfile" in options) != ("certfile" in options):
            raise ConfigurationError(f"{setting}: ssl_certfile and ssl_keyfile go together")
        return cls(**options)

    def context(self) -> ssl.SSLContext:
        """A client context: the CA (else the system's), the client certificate if any."""
        context = ssl.create_default_context(cafile=self.ca_certs)
        context.check_hostname = self.check_hostname and self.cert_reqs != ssl.CERT_NONE
        context.verify_mode = self.cert_reqs
        if self.certfile is not None:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def redis_options(self) -> dict[str, Any]:
        """redis-py's connection keywords."""
        return {
            "ssl_cert_reqs": self.cert_reqs,
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_check_hostname": self.check_hostname,
        }


def store_tls(url: str, conf: Settings) -> TLSOptions | None:
    """A Redis store's TLS: `redis_backend_use_ssl`, else `broker_use_ssl` when the store is
    on the broker's server (it follows the broker's URL, say)."""
    if conf.redis_backend_use_ssl is not None:
        return TLSOptions.read(conf.redis_backend_use_ssl, "redis_backend_use_ssl", url)
    broker = urlsplit(conf.broker_url or "")
    if conf.broker_use_ssl is not None and urlsplit(url)[:2] == broker[:2]:
        return TLSOptions.read(conf.broker_use_ssl, "broker_use_ssl", url)
    return None


def _cert_reqs(value: object, setting: str) -> ssl.VerifyMode:
    if isinstance(value, ssl.VerifyMode):
        return value
    if isinstance(value, str):
        found = _CERT_REQS.get(value.strip().lower().removeprefix("cert_"))
        if found is not None:
            return found
    raise ConfigurationError(
        f"{setting}: ssl_cert_reqs must be 'required', 'optional' or 'none', not {value!r}"
    )


def tls_error(server: str, exc: BaseException) -> TLSError | None:
    """The `TLSError` behind a client library's failure to connect to `server` ("Redis at
    rediss://..."), or None when `exc` is not about TLS."""
    failure = _tls_failure(exc)
    return None if failure is None else TLSError(f"{server}: {failure}")


def _tls_failure(exc: BaseException) -> str | None:
    """What failed in a TLS handshake behind `exc`, as one line: "certificate verify
    failed: ..." when the server was not trusted."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return f"TLS handshake failed: {current.reason or current}"
        current = current.__cause__ or current.__context__
    return None
