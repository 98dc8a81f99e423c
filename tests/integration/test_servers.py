"""The server fixtures answer like the real servers they are."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
import redis.asyncio as redis
from pamqp.commands import Basic
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as ClusterClient
from servers import RabbitMQServer, RedisCluster, RedisServer

pytestmark = pytest.mark.integration


async def _get(url: str, key: str) -> bytes | str | None:
    async with redis.from_url(url) as client:
        return await client.get(key)


async def _set(url: str, key: str, value: str) -> None:
    async with redis.from_url(url) as client:
        await client.set(key, value)


async def test_redis_ping_set_get(redis_server: RedisServer) -> None:
    key = f"test-servers:{uuid.uuid4().hex}"
    async with redis.from_url(redis_server.url) as client:
        assert await client.ping()
        await client.set(key, "value", ex=60)
        assert await client.get(key) == b"value"


@pytest.mark.parametrize("crash", [False, True], ids=["graceful", "sigkill"])
async def test_redis_restart_keeps_aof_data_and_port(
    tmp_path: Path, start_server: Callable[[RedisServer], RedisServer], crash: bool
) -> None:
    server = start_server(RedisServer(tmp_path, aof=True))
    url = server.url
    await _set(url, "kept", "yes")
    if crash:
        server.kill()
        server.start()
    else:
        server.restart()
    assert server.url == url
    assert await _get(url, "kept") == b"yes"


async def test_redis_cluster_spreads_keys_over_masters(redis_cluster: RedisCluster) -> None:
    nodes = [ClusterNode(host, port) for host, port in redis_cluster.startup_nodes]
    async with ClusterClient(startup_nodes=nodes) as client:
        for node in client.get_nodes():
            info = await client.cluster_info(target_nodes=node)
            assert info["cluster_state"] == "ok"
        key_per_master: dict[str, str] = {}
        for key in (f"k{i}" for i in range(100)):
            master = client.get_node_from_key(key)
            assert master is not None
            key_per_master[master.name] = key
        assert len(key_per_master) == len(nodes)
        for key in key_per_master.values():
            await client.set(key, key)
            assert await client.get(key) == key.encode()


async def test_redis_cluster_url_reaches_the_cluster(redis_cluster: RedisCluster) -> None:
    async with ClusterClient.from_url(redis_cluster.url) as client:
        ports = {node.port for node in client.get_nodes()}
    assert ports == {port for _, port in redis_cluster.startup_nodes}


async def test_rabbitmq_publish_with_confirms_and_get(rabbitmq_server: RabbitMQServer) -> None:
    connection = await aio_pika.connect(rabbitmq_server.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"test-servers-{uuid.uuid4().hex}", exclusive=True)
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(b"hello"), routing_key=queue.name
        )
        assert isinstance(confirmation, Basic.Ack)  # a nack would have raised DeliveryError
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"hello"
