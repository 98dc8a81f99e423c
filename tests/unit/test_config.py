"""Settings: Celery names, every way of loading them, and unknown names refused."""

import dataclasses
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from taskq import TaskQ, config
from taskq.brokers.base import create_broker
from taskq.config import Settings
from taskq.errors import ConfigurationError
from taskq.redis_db import RedisSettings
from taskq.suggest import closest


def test_defaults_are_celery_like() -> None:
    conf = Settings()
    assert conf.task_default_queue == "default"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is False
    assert conf.worker_prefetch_multiplier == 4
    assert conf.broker_connection_retry_on_startup is True
    assert conf.broker_connection_max_retries == 100


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
    monkeypatch.setenv("TASKQ_BROKER_CONNECTION_MAX_RETRIES", "")  # None: retry for ever
    app = TaskQ("shop", broker="sqlite:///ignored.db", worker_concurrency=3)
    app.conf.update(worker_concurrency=4)
    assert app.broker_url == "memory://env"
    assert app.result_backend_url == "memory://env-results"
    assert app.conf.worker_concurrency == 12
    assert app.conf.task_acks_late is True
    assert app.conf.accept_content == ["json", "msgpack"]
    assert app.conf.broker_connection_max_retries is None
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


def test_environment_variables_naming_no_setting_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A deployment's own `TASKQ_*` variables do not stop the app; a typo of a setting's
    name is a warning naming the setting, not a silent no-op."""
    monkeypatch.setattr(config, "_IGNORED_VARIABLES", set())
    for key in ("TASKQ_CHECKOUT", "TASKQ_HOME", "TASKQ_VERSION"):
        monkeypatch.setenv(key, "/opt/whatever")
    monkeypatch.setenv("TASKQ_BROKR_URL", "redis://typo:6379/0")
    monkeypatch.setenv("TASKQ_TASK_DEFAULT_QUEUE", "orders")
    with caplog.at_level("DEBUG", logger="taskq.config"):
        app = TaskQ("shop")
    assert app.conf.task_default_queue == "orders"
    assert app.broker_url == "sqlite:///taskq.db"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "environment variable TASKQ_BROKR_URL names no setting"
        " (did you mean 'broker_url'?); ignored"
    ]
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelname == "DEBUG")
    assert "TASKQ_HOME" in debug and "TASKQ_VERSION" in debug


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("task_ack_late", "task_acks_late"),
        ("visibilty_timeout", "visibility_timeout"),
        ("brokre_url", "broker_url"),
        ("task_serialiser", "task_serializer"),
        ("home", None),
        ("checkout", None),
        ("version", None),
        ("task_time_limt", "task_time_limit"),
        ("timeout", None),
    ],
)
def test_did_you_mean_only_suggests_a_typo_away(name: str, suggestion: str | None) -> None:
    known = [*_fields(), "visibility_timeout"]
    assert closest(name, known) == suggestion


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
        ({"broker_connection_max_retries": -1}, "broker_connection_max_retries"),
        ({"broker_connection_max_retries": 2.5}, "broker_connection_max_retries"),
        ({"broker_connection_retry_on_startup": "no"}, "broker_connection_retry_on_startup"),
        ({"broker_publish_timeout": 0}, "broker_publish_timeout"),
        ({"broker_publish_timeout": "5"}, "broker_publish_timeout"),
        ({"worker_blocking_warning": 0}, "worker_blocking_warning"),
        ({"worker_metrics_port": 70000}, "worker_metrics_port"),
        ({"worker_gc_threshold": 0}, "worker_gc_threshold must be an integer >= 1 or None"),
        ({"worker_gc_threshold": "10000"}, "worker_gc_threshold must be an integer >= 1 or None"),
        ({"worker_metrics_port": "9808"}, "worker_metrics_port"),
        ({"worker_log_format": "yaml"}, "worker_log_format must be 'text', 'json' or a logging"),
    ],
)
async def test_invalid_values_fail_on_connect(settings: dict[str, object], match: str) -> None:
    app = TaskQ("a", broker="memory://bad-values", **settings)
    with pytest.raises(ConfigurationError, match=match):
        await app.connect()


async def test_worker_log_format_takes_celerys_format_strings() -> None:
    celery_format = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    async with TaskQ("a", broker="memory://log-format", worker_log_format=celery_format) as app:
        assert app.conf.worker_log_format == celery_format


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
    with pytest.raises(ConfigurationError, match="'worker_state_db' is not supported"):
        conf.config_from_object({"TASKQ_WORKER_STATE_DB": "/tmp/state"}, namespace="TASKQ")
    conf.config_from_object({"TASKQ_WORKER_CONCURRENCY": 7, "OTHER": 1}, namespace="TASKQ")
    assert conf.worker_concurrency == 7


def _fields() -> list[str]:
    return [field.name for field in dataclasses.fields(Settings)]


def test_celery_settings_taskq_does_not_take_say_so() -> None:
    with pytest.raises(
        ConfigurationError,
        match="Celery setting 'worker_state_db' is not supported by taskq: revocations are",
    ):
        TaskQ("shop", worker_state_db="/var/run/celery/state")
    celeryconfig = SimpleNamespace(broker_url="memory://", security_key="/etc/key.pem")
    with pytest.raises(ConfigurationError, match="'security_key' is not supported"):
        TaskQ("shop").config_from_object(celeryconfig)
    with pytest.raises(ConfigurationError, match="enable_utc=False is not supported"):
        TaskQ("shop", enable_utc=False).conf.validate()


def test_a_celeryconfig_module_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "celeryconfig_shop.py").write_text(
        "import os\n"
        "broker_url = 'memory://shop'\n"
        "enable_utc = True\n"
        "imports = ('shop.tasks',)\n"
        "include = ['shop.more_tasks']\n"
        "task_track_started = True\n"
        "task_default_rate_limit = '10/s'\n"
        "task_annotations = {'shop.pay': {'rate_limit': '1/s'}, '*': {'max_retries': 2}}\n"
        "task_queues = ['default', {'name': 'payments', 'max_priority': 9}]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = TaskQ("shop")
    app.config_from_object("celeryconfig_shop")
    conf = app.conf
    assert conf.imports == ["shop.tasks"] and conf.include == ["shop.more_tasks"]
    assert conf.task_queues == {"default": {}, "payments": {"max_priority": 9}}
    assert conf.default_queues() == ["default", "payments"]
    assert conf.annotations_for("shop.pay") == {"rate_limit": "1/s", "max_retries": 2}
    assert conf.annotations_for("shop.ship") == {"max_retries": 2}
    conf.validate()


def test_task_queues_shapes_and_mistakes() -> None:
    kombu_like = SimpleNamespace(
        name="reports",
        queue_arguments={"x-queue-type": "quorum"},
        exchange=SimpleNamespace(name="analytics"),
        routing_key="reports.#",
        max_priority=None,
    )
    conf = Settings()
    conf.task_queues = {"a": {}, "b": {"queue_type": "quorum"}}
    assert conf.task_queues == {"a": {}, "b": {"queue_type": "quorum"}}
    conf.task_queues = [kombu_like]
    assert conf.task_queues == {
        "reports": {
            "queue_arguments": {"x-queue-type": "quorum"},
            "exchange": "analytics",
            "routing_key": "reports.#",
        }
    }
    with pytest.raises(ConfigurationError, match=r"'max_priorty' \(did you mean 'max_priority'"):
        conf.task_queues = [{"name": "a", "max_priorty": 5}]
    with pytest.raises(ConfigurationError, match="max_priority must be 1-9"):
        conf.task_queues = [{"name": "a", "max_priority": 10}]
    with pytest.raises(ConfigurationError, match="a queue without a name"):
        conf.task_queues = [{"max_priority": 5}]
    with pytest.raises(ConfigurationError, match="task_queues must be a list"):
        conf.task_queues = "default"


def test_task_annotations_mistakes() -> None:
    with pytest.raises(ConfigurationError, match="task_annotations must be"):
        Settings().task_annotations = ["shop.pay"]
    with pytest.raises(ConfigurationError, match=r"'shop.pay' must map to \{option: value\}"):
        Settings().task_annotations = {"shop.pay": "1/s"}
    with pytest.raises(ConfigurationError, match=r"task_annotations: .*rate_limt \(did you mean"):
        TaskQ("shop", task_annotations={"*": {"rate_limt": "1/s"}})
    with pytest.raises(ConfigurationError, match="bad rate_limit 'fast'"):
        TaskQ("shop", task_default_rate_limit="fast").conf.validate()


def test_coming_from_celery_lists_every_refused_setting() -> None:
    page = (Path(__file__).parents[2] / "docs" / "coming-from-celery.md").read_text()
    missing = [name for name in config.CELERY_UNSUPPORTED if f"`{name}`" not in page]
    assert missing == []


def test_broker_pool_limit_is_refused_with_redis_cluster() -> None:
    with pytest.raises(ConfigurationError, match="broker_pool_limit is not supported with Redis"):
        RedisSettings.parse("redis://127.0.0.1:7000/0?cluster=true", {}, 10)


def test_celery_task_event_settings_are_taken() -> None:
    """`worker_send_task_events` and `task_send_sent_event` are real settings now, from a
    celeryconfig as from the environment."""
    celeryconfig = SimpleNamespace(worker_send_task_events=True, task_send_sent_event=True)
    app = TaskQ("shop", broker="memory://events")
    app.config_from_object(celeryconfig)
    assert (app.conf.worker_send_task_events, app.conf.task_send_sent_event) == (True, True)
    conf = Settings()
    conf.apply_environment({"TASKQ_WORKER_SEND_TASK_EVENTS": "true"})
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is False
    assert "worker_send_task_events" not in config.CELERY_UNSUPPORTED
