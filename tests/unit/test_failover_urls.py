"""Several nodes or URLs for one broker: Redis Cluster startup nodes, Celery's fail-over lists."""

import pytest

from taskq import TaskQ
from taskq.brokers.base import create_broker
from taskq.errors import ConfigurationError
from taskq.redis_db import RedisSettings
from taskq.urls import masked_url

NODES = (("n1", 7000), ("n2", 7001), ("n3", 6379))


def test_a_cluster_url_names_every_startup_node() -> None:
    settings = RedisSettings.parse("redis://:pw@n1:7000,n2:7001,n3/0?cluster=true&prefix=s:", {})
    assert settings.nodes == NODES
    assert (settings.url, settings.cluster, settings.prefix) == (
        "redis://:pw@n1:7000/0",
        True,
        "s:",
    )


@pytest.mark.parametrize(
    "broker",
    [
        "redis://n1:7000/0?cluster=true;redis://n2:7001/0?cluster=true;redis://n3/0?cluster=true",
        [
            "redis://n1:7000/0?cluster=true",
            "redis://n2:7001/0?cluster=true",
            "redis://n3/0?cluster=true",
        ],
    ],
)
def test_a_fail_over_list_is_the_same_cluster(broker: str | list[str]) -> None:
    app = TaskQ("shop", broker=broker)
    broker_object = create_broker(app.broker_url, app.conf)
    assert broker_object.settings.nodes == NODES  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis://n1:7000,n2:7001/0", "several Redis nodes in .* need \\?cluster=true"),
        ("redis://n1/0?cluster=true;redis://n2/0?cluster=false", "differ in more than"),
        ("redis://:a@n1/0?cluster=true;redis://:b@n2/0?cluster=true", "differ in more than"),
        ("redis://n1:7000,:7001/0?cluster=true", "a Redis node without a host"),
    ],
)
def test_nodes_that_cannot_be_one_cluster_are_refused(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        RedisSettings.parse(url, {})


def test_a_fail_over_list_of_mixed_schemes_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="mix schemes"):
        create_broker("redis://n1/0;amqp://n2//", TaskQ("shop").conf)


@pytest.mark.parametrize("broker", [[], ["redis://n1/0", 7]])
def test_a_broker_url_list_holds_urls(broker: list[object]) -> None:
    with pytest.raises(ConfigurationError, match="broker_url must be a URL or a list of URLs"):
        TaskQ("shop", broker=broker)  # type: ignore[arg-type]


def test_every_password_of_a_fail_over_list_is_masked() -> None:
    assert masked_url("amqp://u:p1@a//;amqp://u:p2@b//") == "amqp://u:***@a//;amqp://u:***@b//"
