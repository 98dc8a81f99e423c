"""`masked_url`: every URL's password in a text as `***`, whatever the password holds."""

from __future__ import annotations

import pytest

from taskq.urls import masked_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:PW@host/3?cluster=true", "redis://:***@host/3?cluster=true"),
        ("redis+tls://user:PW@h:1/0", "redis+tls://user:***@h:1/0"),
        ("amqp://u:p@ss/w:rd@h/v", "amqp://u:***@h/v"),  # unescaped @ and / in the password
        (
            "two: rediss://:PW@h1/0 and amqps://u:PW@h2/",
            "two: rediss://:***@h1/0 and amqps://u:***@h2/",
        ),
        ("redis://h/0?password=PW&db=1", "redis://h/0?password=***&db=1"),
        ("rediss://h?ssl_keyfile_password=PW", "rediss://h?ssl_keyfile_password=***"),
        ("'redis://:PW@h/0' refused", "'redis://:***@h/0' refused"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("sqlite:///var/taskq.db", "sqlite:///var/taskq.db"),
        (
            "put it in the URL (redis://:password@host:port/db)",
            "put it in the URL (redis://:password@host:port/db)",
        ),
    ],
)
def test_every_password_is_masked(text: str, shown: str) -> None:
    assert masked_url(text) == shown
