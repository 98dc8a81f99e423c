"""task_routes: exact names, globs, callables, lists; and the precedence of options."""

import threading

import pytest

from taskq.errors import ConfigurationError
from taskq.routing import Router
from taskq.testing import memory_app


def test_exact_names_win_over_globs() -> None:
    router = Router({"shop.pay.*": {"queue": "payments"}, "shop.pay.refund": "refunds"})
    assert router.route("shop.pay.refund", [], {}, {}) == {"queue": "refunds"}
    assert router.route("shop.pay.charge", [], {}, {}) == {"queue": "payments"}
    assert router.route("shop.ship", [], {}, {}) == {}


def test_callables_and_lists_are_tried_in_order() -> None:
    def by_argument(
        name: str, args: list[object], kwargs: dict[str, object], options: object
    ) -> object:
        return {"queue": "vip", "priority": 9} if kwargs.get("vip") else None

    router = Router([by_argument, {"shop.*": "shop"}])
    assert router.route("shop.order", [], {"vip": True}, {}) == {"queue": "vip", "priority": 9}
    assert router.route("shop.order", [], {}, {}) == {"queue": "shop"}


def test_bad_routes_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Router([42])
    with pytest.raises(ConfigurationError, match="expected a queue name"):
        Router({"a": 5}).route("a", [], {}, {})


def test_option_precedence_call_then_task_then_route_then_default() -> None:
    app = memory_app(task_routes={"tests.*": {"queue": "routed", "priority": 3}})

    @app.task(name="tests.plain")
    async def plain() -> None: ...

    @app.task(name="tests.own", queue="own")
    async def own() -> None: ...

    @app.task(name="other.task")
    async def other() -> None: ...

    assert app.build_message("tests.plain").queue == "routed"
    assert app.build_message("tests.plain").priority == 3
    assert app.build_message("tests.plain", queue="explicit", priority=1).queue == "explicit"
    assert app.build_message("other.task").queue == "default"
    assert app.build_message("other.task").priority is None


async def test_task_queue_option_wins_over_routes() -> None:
    app = memory_app(task_routes={"tests.*": "routed"})

    @app.task(name="tests.own", queue="own")
    async def own() -> None: ...

    async with app:
        await own.delay()
        broker = await app.connected_broker()
        assert await broker.queue_length("own") == 1
        assert await broker.queue_length("routed") == 0


def test_routes_edited_in_place_take_effect() -> None:
    app = memory_app(task_routes={"tests.*": "first"})
    assert app.build_message("tests.job").queue == "first"
    routes = app.conf.task_routes
    assert isinstance(routes, dict)
    routes["tests.job"] = "second"
    routes["other.*"] = "third"
    assert app.build_message("tests.job").queue == "second"
    assert app.build_message("other.job").queue == "third"
    app.conf.task_routes = None
    assert app.build_message("tests.job").queue == "default"


def test_routes_holding_objects_that_cannot_be_copied_still_route() -> None:
    class ByLock:
        """A route callable holding a lock: a deep copy of it would fail."""

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self, name: str, *rest: object) -> str:
            return "locked"

    app = memory_app(task_routes=[ByLock()])
    assert app.build_message("tests.job").queue == "locked"
    assert app.build_message("tests.job").queue == "locked"
