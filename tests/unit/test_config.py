"""Settings: Celery names, every way of loading them, and unknown names refused."""

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from taskq import TaskQ
from taskq.brokers.base import create_broker
from taskq.config import Settings
from taskq.errors import ConfigurationError


def test_defaults_are_celery_like() -> None:
    conf = Settings()
    assert conf.task_default_queue == "default"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is False
    assert conf.worker_prefetch_multiplier == 4


def test_keyword_arguments_and_update() -> None:
    app = TaskQ("shop", broker="memory://x", task_default_queue="q1")
    app.conf.update(task_acks_late=True, result_expires=timedelta(minutes=5))
    assert app.broker_url == "memory://x"
    assert app.conf.task_default_queue == "q1"
    assert app.conf.task_acks_late is True
    assert app.conf.result_expires == 300.0


def test_unknown_setting_is_an_error_with_a_hint() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'task_acks_late'"):
        TaskQ("shop", task_acks_lat=True)
    conf = Settings()
    with pytest.raises(ConfigurationError):
        conf.update(no_such_thing=1)
    with pytest.raises(ConfigurationError):
        conf.worker_concurency = 3  # type: ignore[attr-defined]


def test_config_from_object_reads_settings_and_refuses_typos() -> None:
    app = TaskQ("shop")
    app.config_from_object(SimpleNamespace(task_default_queue="from-object", unrelated_helper=1))
    assert app.conf.task_default_queue == "from-object"
    with pytest.raises(ConfigurationError, match="task_defalt_queue"):
        app.config_from_object(SimpleNamespace(task_defalt_queue="x"))
    app.config_from_object({"worker_concurrency": 7})
    assert app.conf.worker_concurrency == 7


def test_config_from_module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path
    (directory / "taskqconfig_for_test.py").write_text("task_default_queue = 'from-module'\n")
    monkeypatch.syspath_prepend(str(directory))
    app = TaskQ("shop")
    app.config_from_object("taskqconfig_for_test")
    assert app.conf.task_default_queue == "from-module"
    with pytest.raises(ConfigurationError, match="cannot import"):
        app.config_from_object("no_such_module_here")


def test_environment_wins_and_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_BROKER_URL", "memory://env")
    monkeypatch.setenv("TASKQ_RESULT_BACKEND", "memory://env-results")
    monkeypatch.setenv("TASKQ_WORKER_CONCURRENCY", "12")
    monkeypatch.setenv("TASKQ_TASK_ACKS_LATE", "true")
    monkeypatch.setenv("TASKQ_ACCEPT_CONTENT", "json,msgpack")
    monkeypatch.setenv("TASKQ_BROKER_TRANSPORT_OPTIONS", '{"visibility_timeout": 5}')
    app = TaskQ("shop", broker="sqlite:///ignored.db", worker_concurrency=3)
    app.conf.update(worker_concurrency=4)
    assert app.broker_url == "memory://env"
    assert app.result_backend_url == "memory://env-results"
    assert app.conf.worker_concurrency == 12
    assert app.conf.task_acks_late is True
    assert app.conf.accept_content == ["json", "msgpack"]
    assert create_broker(app.broker_url, app.conf).options.visibility_timeout == 5.0


@pytest.mark.parametrize(
    ("setting", "url", "message"),
    [
        (
            "broker_transport_options",
            "memory://typo",
            r"broker_transport_options: unknown option 'visibilty_timeout' "
            r"\(did you mean 'visibility_timeout'\?\)",
        ),
        (
            "result_backend_transport_options",
            "sqlite:///typo.db",
            r"result_backend_transport_options: unknown option 'busy_timout' "
            r"\(did you mean 'busy_timeout'\?\)",
        ),
    ],
)
async def test_a_misspelt_transport_option_is_an_error(
    setting: str, url: str, message: str
) -> None:
    """Each backend reads its own options and refuses the others, never ignores them."""
    typo = "visibilty_timeout" if setting.startswith("broker") else "busy_timout"
    app = TaskQ("shop", broker=url, **{setting: {typo: 5}})
    with pytest.raises(ConfigurationError, match=message):
        await app.connect()


def test_amqp_options_are_the_amqp_brokers_own() -> None:
    """A Redis broker refuses an AMQP option: app.py passes none of them around."""
    with pytest.raises(ConfigurationError, match="unknown option 'quorum_queues'"):
        create_broker(
            "redis://localhost/0", Settings(broker_transport_options={"quorum_queues": []})
        )


def test_bad_environment_values_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_WORKER_CONCURRENCY", "many")
    with pytest.raises(ConfigurationError, match="TASKQ_WORKER_CONCURRENCY"):
        TaskQ("shop")
    monkeypatch.delenv("TASKQ_WORKER_CONCURRENCY")
    monkeypatch.setenv("TASKQ_NOT_A_SETTING", "1")
    with pytest.raises(ConfigurationError, match="TASKQ_NOT_A_SETTING"):
        TaskQ("shop")


def test_store_follows_the_broker() -> None:
    assert TaskQ("a").broker_url == "sqlite:///taskq.db"
    assert TaskQ("a").result_backend_url == "sqlite:///taskq.db"
    assert TaskQ("a", broker="redis://h:6379/0").result_backend_url == "redis://h:6379/0"
    assert TaskQ("a", broker="amqp://guest:guest@h//").result_backend_url == "sqlite:///taskq.db"
    assert (
        TaskQ("a", broker="amqp://h//", backend="redis://r/1").result_backend_url == "redis://r/1"
    )


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"worker_concurrency": 0}, "worker_concurrency"),
        ({"accept_content": ["yaml"]}, "unknown serializers"),
        ({"task_serializer": "yaml"}, "task_serializer"),
        ({"task_default_priority": 12}, "0-9"),
    ],
)
async def test_invalid_values_fail_on_connect(settings: dict[str, object], match: str) -> None:
    app = TaskQ("a", broker="memory://bad-values", **settings)
    with pytest.raises(ConfigurationError, match=match):
        await app.connect()


@pytest.mark.parametrize("url", ["nosuch://x", "localhost:6379", "sqlite://", "sqlite:///"])
async def test_bad_urls_fail_with_a_clear_error(url: str) -> None:
    app = TaskQ("a", broker=url, backend="memory://ok")
    with pytest.raises(ConfigurationError, match="URL"):
        await app.connect()


def test_config_from_module_attribute_with_a_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's way: `config_from_object("django.conf:settings", namespace="TASKQ")` reads the
    uppercase TASKQ_ settings and leaves the project's own names alone."""
    (tmp_path / "shop_settings_for_test.py").write_text(
        "class settings:\n"
        "    DEBUG = True\n"
        "    TASKQ_BROKER_URL = 'memory://from-django'\n"
        "    TASKQ_TASK_DEFAULT_QUEUE = 'orders'\n"
        "    task_acks_late = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = TaskQ("shop")
    app.config_from_object("shop_settings_for_test:settings", namespace="TASKQ")
    assert (app.broker_url, app.conf.task_default_queue) == ("memory://from-django", "orders")
    assert app.conf.task_acks_late is False  # lowercase: not in the namespace
    with pytest.raises(ConfigurationError, match="no attribute 'setings'"):
        app.config_from_object("shop_settings_for_test:setings", namespace="TASKQ")


def test_namespaced_typos_and_bad_namespaces_are_errors() -> None:
    conf = Settings()
    with pytest.raises(ConfigurationError, match="did you mean 'TASKQ_BROKER_URL'"):
        conf.config_from_object(SimpleNamespace(TASKQ_BROKR_URL="memory://x"), namespace="TASKQ")
    with pytest.raises(ConfigurationError, match="did you mean 'TASKQ_RESULT_EXPIRES'"):
        conf.config_from_object({"TASKQ_result_expires": 5}, namespace="TASKQ")
    with pytest.raises(ConfigurationError, match="namespace must be uppercase"):
        conf.config_from_object({"taskq_broker_url": "memory://x"}, namespace="taskq")
    conf.config_from_object({"TASKQ_WORKER_CONCURRENCY": 7, "OTHER": 1}, namespace="TASKQ")
    assert conf.worker_concurrency == 7
