"""The task API on the in-memory broker: publish, options, results, eager mode, direct calls."""

import time

import anyio
import pytest

from taskq import AsyncResult, TaskError, chain, signature, states
from taskq.errors import MessageTooLargeError, NotRegisteredError, TimeoutError
from taskq.message import decode
from taskq.middleware import Middleware
from taskq.options import Option
from taskq.testing import memory_app, running_worker

app = memory_app("shop")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="shop.resize", queue="images", ignore_result=False)
def resize(path: str, size: int) -> str:
    return f"{path}@{size}"


@app.task(bind=True)
async def whoami(self) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "id": self.request.id,
        "queue": self.request.delivery_info["queue"],
        "retries": self.request.retries,
    }


@app.task
async def fail(message: str) -> None:
    raise ValueError(message)


class CustomError(Exception):
    pass


@app.task
async def fail_custom() -> None:
    raise CustomError("custom")


def test_default_names_are_module_and_function() -> None:
    assert add.name == f"{__name__}.add"
    assert resize.name == "shop.resize"
    assert app.tasks["shop.resize"] is resize


async def test_direct_call_runs_inline() -> None:
    assert await add(1, 2) == 3
    assert resize("a.png", 8) == "a.png@8"


async def test_delay_and_get_through_a_worker() -> None:
    async with app, running_worker(app, queues=["default", "images"]):
        result = await add.delay(4, 5)
        assert isinstance(result, AsyncResult)
        assert await result.get(timeout=10) == 9
        assert await result.status() == states.SUCCESS
        assert await result.ready() and await result.successful()
        assert not await result.failed()
        thumb = await resize.apply_async(
            args=["a.png", 128], task_id="my-id", priority=7, expires=3600
        )
        assert thumb.id == "my-id"
        assert await thumb.get(timeout=10) == "a.png@128"
        by_name = await app.send_task("shop.resize", args=["b.png", 64])
        assert await by_name.get(timeout=10) == "b.png@64"
        info = await (await whoami.apply_async(queue="images")).get(timeout=10)
        assert info["queue"] == "images" and info["retries"] == 0 and len(str(info["id"])) == 32


async def test_failure_names_the_original_type_and_keeps_the_traceback() -> None:
    async with app, running_worker(app):
        result = await fail.delay("bad value")
        with pytest.raises(TaskError) as caught:
            await result.get(timeout=10)
        assert isinstance(caught.value, ValueError)
        assert type(caught.value).__name__ == "ValueError"
        assert "bad value" in str(caught.value)
        assert (
            caught.value.remote_traceback
            and "raise ValueError(message)" in caught.value.remote_traceback
        )
        assert await result.status() == states.FAILURE and await result.failed()
        assert "ValueError" in (await result.traceback() or "")
        error = await result.get(timeout=1, propagate=False)
        assert isinstance(error, TaskError)
        custom = await fail_custom.delay()
        with pytest.raises(TaskError, match="custom") as caught_custom:
            await custom.get(timeout=10)
        assert caught_custom.value.exc_type == f"{__name__}.CustomError"


async def test_unknown_ids_are_pending_and_get_times_out() -> None:
    async with app:
        result = app.AsyncResult("nobody")
        assert await result.status() == states.PENDING
        assert await result.result() is None
        with pytest.raises(TimeoutError):
            await result.get(timeout=0.05)
        assert AsyncResult("nobody", app=app) == result


async def test_forget_removes_the_result() -> None:
    async with app, running_worker(app):
        result = await add.delay(1, 1)
        assert await result.get(timeout=10) == 2
        await result.forget()
        assert await result.status() == states.PENDING


async def test_apply_async_sets_envelope_fields() -> None:
    local = memory_app("shop")

    @local.task(name="t.later")
    async def later() -> None: ...

    async with local:
        before = time.time()
        await later.apply_async(priority=5, expires=120, headers={"k": "v"}, task_id="x")
        broker = await local.connected_broker()
        assert await broker.queue_length("default") == 1
        consumer = broker.consume(["default"], prefetch=1)
        delivery = await anext(consumer)
        await consumer.aclose()
        message = decode(delivery.body, {"json"})
        await delivery.nack()
        assert message.id == "x" and message.priority == 5 and message.headers == {"k": "v"}
        assert message.expires is not None and before + 119 < message.expires < time.time() + 121
        assert message.root_id == "x" and message.parent_id is None and message.queue == "default"


async def test_countdown_delays_the_message() -> None:
    local = memory_app("shop")

    @local.task(name="t.later")
    async def later() -> None: ...

    async with local:
        result = await later.apply_async(countdown=60)
        broker = await local.connected_broker()
        assert await broker.queue_length("default") == 1
        async with running_worker(local):
            with pytest.raises(TimeoutError):
                await result.get(timeout=0.3)
        assert await result.status() == states.PENDING


async def test_bad_calls_are_clear_errors() -> None:
    local = memory_app("shop", task_max_message_bytes=1000)

    @local.task(name="t.any")
    async def anything(*args: object) -> None: ...

    async with local:
        with pytest.raises(MessageTooLargeError):
            await anything.delay("x" * 5000)
        with pytest.raises(ValueError, match="countdown or eta"):
            await anything.apply_async(countdown=1, eta=time.time())
        with pytest.raises(ValueError, match="0-9"):
            await anything.apply_async(priority=10)
        broker = await local.connected_broker()
        assert await broker.queue_length("default") == 0


def test_unknown_task_options_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown task option"):

        @app.task(retry_forever=True)
        async def nope() -> None: ...


async def test_eager_mode_runs_inline_and_never_touches_the_broker() -> None:
    eager = memory_app("eager", task_always_eager=True)

    @eager.task
    async def double(x: int) -> int:
        return x * 2

    @eager.task
    def boom() -> None:
        raise KeyError("k")

    result = await double.delay(21)
    assert await result.get() == 42
    assert await result.status() == states.SUCCESS
    failed = await boom.delay()
    assert await failed.status() == states.FAILURE
    with pytest.raises(KeyError):
        await failed.get()
    broker = await eager.connected_broker()
    assert await broker.queue_length("default") == 0
    with pytest.raises(NotRegisteredError):
        await eager.send_task("not.registered")
    eager.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        await boom.delay()


async def test_unknown_call_options_are_a_type_error_naming_them() -> None:
    local = memory_app("calls")

    @local.task
    async def anything() -> None: ...

    async with local:
        with pytest.raises(TypeError, match=r"contdown \(did you mean 'countdown'\?\)"):
            await anything.apply_async(contdown=3)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"unknown call option.*: bogus"):
            await local.send_task("calls.anything", bogus=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"unknown signature option.*: prio"):
            anything.s().set(prio=1)
        with pytest.raises(TypeError, match=r"unknown signature option.*: prio"):
            signature("calls.anything", app=local, prio=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"unknown call option.*: bogus"):
            await chain(anything.s(), anything.si()).apply_async(bogus=1)
        assert await (await local.connected_broker()).queue_length("default") == 0


async def test_publish_timeout_is_an_option_of_the_call_that_publishes() -> None:
    local = memory_app("timeouts")

    @local.task
    async def double(x: int) -> int:
        return x * 2

    refused = r"publish_timeout: an option of the call that publishes \(apply_async\)"
    with pytest.raises(TypeError, match=refused):
        double.s(1).set(publish_timeout=1)
    with pytest.raises(TypeError, match=refused):
        signature(double, [1], publish_timeout=1)
    async with local, running_worker(local):
        assert await (await double.apply_async([2], publish_timeout=5)).get(timeout=5) == 4
        assert await (await double.s(3).apply_async(publish_timeout=5)).get(timeout=5) == 6
        for bad in (0, -1, "5", True):
            with pytest.raises(ValueError, match="publish_timeout must be a positive number"):
                await double.apply_async([1], publish_timeout=bad)  # type: ignore[arg-type]


async def test_ignore_result_per_call_and_links_on_send_task() -> None:
    local = memory_app("calls")
    seen: list[object] = []

    @local.task(name="calls.add")
    async def add_(x: int, y: int) -> int:
        return x + y

    @local.task(name="calls.record")
    async def record(value: object) -> None:
        seen.append(value)

    async with local, running_worker(local):
        ignored = await add_.apply_async((1, 2), ignore_result=True)
        linked = await local.send_task("calls.add", [2, 3], link=record.s())
        assert await linked.get(timeout=5) == 5
        with anyio.fail_after(5):
            while not seen:  # noqa: ASYNC110 - filled by the linked task
                await anyio.sleep(0.01)
        assert await ignored.status() == states.PENDING  # it ran, nothing was stored
    assert seen == [5]


async def test_middleware_declares_a_task_option_of_its_own() -> None:
    local = memory_app("plugins")

    class Audit(Middleware):
        options = (Option("audit_level", "none"),)

    with pytest.raises(TypeError, match="audit_level"):

        @local.task(audit_level="full")
        async def too_early() -> None: ...

    local.middleware.add(Audit())

    @local.task(audit_level="full")
    async def audited() -> None: ...

    @local.task
    async def plain() -> None: ...

    assert audited.options == {"audit_level": "full"}
    assert plain.options == {"audit_level": "none"}


def test_a_soft_time_limit_over_the_hard_one_is_refused_at_decoration() -> None:
    with pytest.raises(ValueError, match=r"soft_time_limit \(10 s\) is over time_limit \(5 s\)"):

        @app.task(time_limit=5, soft_time_limit=10)
        async def slow() -> None: ...

    @app.task(time_limit=5, soft_time_limit=5)
    async def bounded() -> None: ...

    assert (bounded.soft_time_limit, bounded.time_limit) == (5, 5)


def test_typing_takes_true_or_false() -> None:
    with pytest.raises(TypeError, match="typing must be True or False, not 'no'"):

        @app.task(typing="no")
        async def loose() -> None: ...
