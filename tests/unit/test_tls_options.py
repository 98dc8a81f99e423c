"""`broker_use_ssl` / `redis_backend_use_ssl` read as TLSOptions: Celery's names (and
py-amqp's for RabbitMQ), checked; nothing given is ignored."""

from __future__ import annotations

import ssl

import pytest

from taskq import TaskQ
from taskq.errors import ConfigurationError
from taskq.tls import TLSOptions, store_tls


def test_celery_names_and_py_amqp_names_read_the_same() -> None:
    redis = TLSOptions.read(
        {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem",
         "ssl_keyfile": "/c.key"},
        "broker_use_ssl",
        "rediss://h/0",
    )  # fmt: skip
    amqp = TLSOptions.read(
        {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/ca.pem", "certfile": "/c.pem",
         "keyfile": "/c.key"},
        "broker_use_ssl",
        "amqps://h/",
    )  # fmt: skip
    assert redis == amqp == TLSOptions(ssl.CERT_REQUIRED, "/ca.pem", "/c.pem", "/c.key")
    assert TLSOptions.read(True, "broker_use_ssl", "amqps://h/") == TLSOptions()
    assert TLSOptions.read(None, "broker_use_ssl", "redis://h/0") is None
    none = TLSOptions.read({"ssl_cert_reqs": "CERT_NONE"}, "broker_use_ssl")
    assert none is not None and not none.check_hostname and not none.context().check_hostname


@pytest.mark.parametrize(
    ("given", "url", "error"),
    [
        ({"ssl_ca_cert": "/ca.pem"}, "rediss://h/0", "unknown option 'ssl_ca_cert' .*did you mean"),
        (
            {},
            "redis://:pw@h/0",
            r"'redis://:\*\*\*@h/0' is not a TLS URL",
        ),
        ({"ssl_certfile": "/c.pem"}, "rediss://h/0", "ssl_certfile and ssl_keyfile go together"),
        ({"ssl_cert_reqs": "sometimes"}, "rediss://h/0", "'required', 'optional' or 'none'"),
        ({"ssl_ca_certs": 3}, "rediss://h/0", "must be a file's path"),
        ("yes", "rediss://h/0", "a dict of TLS options or True"),
    ],
)
def test_what_does_not_fit_is_a_one_line_error(given: object, url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        TLSOptions.read(given, "broker_use_ssl", url)  # type: ignore[arg-type]


def test_a_store_on_the_brokers_server_takes_broker_use_ssl() -> None:
    app = TaskQ("t", broker="rediss://h:6380/0", broker_use_ssl={"ssl_ca_certs": "/ca.pem"})
    assert store_tls("rediss://h:6380/1", app.conf) == TLSOptions(ca_certs="/ca.pem")
    assert store_tls("rediss://other:6380/1", app.conf) is None
    app.conf.redis_backend_use_ssl = {"ssl_ca_certs": "/store-ca.pem"}
    assert store_tls("rediss://other:6380/1", app.conf) == TLSOptions(ca_certs="/store-ca.pem")
