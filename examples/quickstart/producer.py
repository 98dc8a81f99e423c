"""Submit tasks and print their results (a worker must be running: see demo.py)."""

import time

import anyio
from tasks import add, app, divide, fetch, mul, resize, summarize, tsum, whoami

from taskq import TaskError, chain, chord, group


async def main() -> None:
    async with app:
        result = await add.delay(4, 5)
        print(f"add(4, 5)             = {await result.get(timeout=30)}")

        thumb = await resize.apply_async(args=["cat.png", 128], priority=7)
        print(f"resize (thread)       = {await thumb.get(timeout=30)!r}")

        print(f"whoami (bound task)   = {await (await whoami.delay()).get(timeout=30)}")

        by_name = await app.send_task("quickstart.resize", args=["dog.png", 64])
        print(f"send_task by name     = {await by_name.get(timeout=30)!r}")

        failed = await divide.delay(1, 0)
        try:
            await failed.get(timeout=30)
        except TaskError as exc:
            state = await failed.status()
            print(f"divide(1, 0) failed   : {type(exc).__name__}: {exc.exc_message} ({state})")

        later = await add.apply_async(args=[1, 1], countdown=1)
        started = time.perf_counter()
        value = await later.get(timeout=30)
        print(f"countdown=1           = {value} after {time.perf_counter() - started:.1f}s")

        started = time.perf_counter()
        results = [await fetch.delay(f"https://example.com/{n}") for n in range(200)]
        pages = [await r.get(timeout=60) for r in results]
        elapsed = time.perf_counter() - started
        print(f"200 I/O tasks (50 ms) : {len(pages)} done in {elapsed:.2f}s, run concurrently")

        print(f"direct call, inline   = {await add(2, 3)}")

        workflow = add.s(4, 5) | mul.s(2) | summarize.s("Result:")
        print(f"chain                 = {await (await workflow.apply_async()).get(timeout=30)!r}")

        squares = await group(mul.s(i, i) for i in range(10)).apply_async()
        print(f"group                 = {await squares.get(timeout=30)}")

        total = await chord((add.s(i, i) for i in range(100)), tsum.s()).apply_async()
        print(f"chord of 100          = {await total.get(timeout=30)}")

        nested = chain(chord(group(add.s(i, i) for i in range(5)), tsum.s()), mul.s(2))
        print(f"chain(chord, mul)     = {await (await nested.apply_async()).get(timeout=30)}")


if __name__ == "__main__":
    anyio.run(main)
