"""Throwaway Redis and RabbitMQ for a benchmark run, Redis's own ceiling, and the latency of
one redis-py PING (the floor of a round trip on it).

The servers are the test suite's (tests/servers.py, loaded by path: `tests` is no package):
child processes on free loopback ports with their files in a temporary directory, stopped by
pid at the end. Never a system service.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from benchmarks.measure import percentile

ROOT = Path(__file__).resolve().parent.parent
CEILING_REQUESTS = 200_000
CEILING_CLIENTS = 50
PIPELINE = 16
PINGS = 5_000
CEILING_LINE = re.compile(r"^(\w+): ([\d.]+) requests per second", re.MULTILINE)


def load_test_servers() -> ModuleType:
    """The test suite's tests/servers.py (loaded by path: `tests` is no package)."""
    name = "taskq_test_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "servers.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Servers:
    """The running servers; `amqp_url` is None when no workload needs RabbitMQ."""

    redis_url: str
    redis_port: int
    redis_pid: int
    amqp_url: str | None

    def reset(self) -> None:
        """Between runs: every run starts on an empty Redis (RabbitMQ queues end empty)."""
        reply = load_test_servers().redis_command(self.redis_port, "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")


@contextmanager
def running(directory: Path, *, amqp: bool) -> Iterator[Servers]:
    """Start Redis (always: the completion counter lives there) and RabbitMQ if asked."""
    servers = load_test_servers()
    with ExitStack() as stack:
        redis = servers.RedisServer(directory / "redis")
        redis.start()
        stack.callback(redis.stop)
        amqp_url = None
        if amqp:
            rabbitmq = servers.RabbitMQServer(directory / "rabbitmq")
            rabbitmq.start()
            stack.callback(rabbitmq.stop)
            amqp_url = rabbitmq.url
        yield Servers(redis.url, redis.port, redis.pid, amqp_url)


def redis_ceiling(port: int, requests: int = CEILING_REQUESTS) -> dict[str, float]:
    """`redis-benchmark -t lpush,rpop` requests/s, without and with `-P 16` pipelining."""
    binary = load_test_servers().require_binary("redis-benchmark", "redis-tools")
    ceiling = {}
    for label, extra in (("", []), (f" -P {PIPELINE}", ["-P", str(PIPELINE)])):
        argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "lpush,rpop", "-q"]
        argv += ["-n", str(requests), "-c", str(CEILING_CLIENTS), *extra]
        output = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
        # redis-benchmark redraws its progress with \r; the last figure on each line is final.
        for command, rate in CEILING_LINE.findall(output.stdout.replace("\r", "\n")):
            ceiling[f"{command}{label}"] = float(rate)
    return ceiling


def redis_ping_ms(port: int, count: int = PINGS) -> dict[str, float]:
    """p10 and p50 (ms) of `count` redis-py PINGs one after another on one asyncio connection:
    what one command costs a client here, beside which a round trip's p50 is judged."""
    from redis.asyncio import Redis

    async def pings() -> list[float]:
        client = Redis(host="127.0.0.1", port=port)
        try:
            await client.ping()  # connected before the clock starts
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                await client.ping()
                latencies.append(time.perf_counter() - started)
            return latencies
        finally:
            await client.aclose()

    latencies = asyncio.run(pings())
    return {
        quantile: 1e3 * percentile(latencies, q) for quantile, q in (("p10", 0.1), ("p50", 0.5))
    }
