"""Throwaway clusters that survive the loss of one node, on loopback, for fail-over tests.

    cluster = ReplicatedRedisCluster(tmp_path)   # 3 masters, a replica each, AOF,
    cluster.start()                              # cluster-node-timeout 2 s
    victim = cluster.master_of("{default}")      # the master serving that key's slot
    victim.kill()                                # SIGKILL; its replica takes over in ~3 s
    cluster.wait_for_failover("{default}")       # the promoted replica
    victim.start()                               # rejoins, as a replica

    rabbit = RabbitMQCluster(tmp_path)           # 3 nodes joined into one cluster
    rabbit.start()                               # rabbit.nodes[i].url, .kill(), .start()

Built from tests/servers.py's servers (same isolation: loopback only, every file under the
given directory, only our own pids signalled). Standard library only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from servers import (
    LOOPBACK,
    RedisServer,
    ServerStartError,
    redis_command,
    require_binary,
    wait_until_ready,
)

NODE_TIMEOUT_MS = 2000
MASTERS = 3


class _ClusterNode(RedisServer):
    """A Redis Cluster node with AOF and a short `cluster-node-timeout`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, aof=True, cluster=True)

    def _write_config(self, port: int, cluster_port: int) -> None:
        super()._write_config(port, cluster_port)
        with (self.directory / "redis.conf").open("a") as config:  # the last value wins
            config.write(f"cluster-node-timeout {NODE_TIMEOUT_MS}\n")


class ReplicatedRedisCluster:
    """Six Redis Cluster nodes on loopback: three masters sharing the slots, a replica each."""

    def __init__(self, directory: Path, *, timeout: float = 60.0) -> None:
        self.directory = directory.resolve()
        self.timeout = timeout
        self.nodes = [_ClusterNode(self.directory / f"node{i}") for i in range(2 * MASTERS)]

    def url(self, first: RedisServer | None = None) -> str:
        """Every node as a startup node, `first` (default: the first node) named first."""
        first = first or self.nodes[0]
        ordered = [first, *(node for node in self.nodes if node is not first)]
        hosts = ",".join(f"{LOOPBACK}:{node.port}" for node in ordered)
        return f"redis://{hosts}/0?cluster=true"

    def start(self) -> None:
        redis_cli = require_binary("redis-cli", "redis-tools")
        try:
            for node in self.nodes:
                node.start()
            self._create(redis_cli)
            self.wait_for_state_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def master_of(self, key: str) -> RedisServer:
        """The running master that serves `key`'s slot, as a live node sees it."""
        probe = next(node for node in self.nodes if node.running)
        slot = int(redis_command(probe.port, "CLUSTER", "KEYSLOT", key).lstrip(b":"))
        for line in redis_command(probe.port, "CLUSTER", "NODES").decode().splitlines():
            # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
            _id, address, flags, _master, _ping, _pong, _epoch, state, *ranges = line.split()
            if "master" not in flags or "fail" in flags or state != "connected":
                continue
            for part in ranges:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(address.split("@")[0].rsplit(":", 1)[1])
                    owner = next(node for node in self.nodes if node.port == port)
                    if owner.running:
                        return owner
        raise LookupError(f"no live master serves slot {slot}")

    def wait_for_failover(self, key: str) -> RedisServer:
        """Until a running master serves `key`'s slot (a replica was promoted); that master."""
        owner: list[RedisServer] = []

        def promoted() -> bool:
            try:
                owner[:] = [self.master_of(key)]
            except (LookupError, OSError):
                return False
            return True

        try:
            wait_until_ready(promoted, lambda: True, self.timeout)
        except TimeoutError as exc:
            raise ServerStartError(f"no replica took over {key!r}: {exc}") from exc
        self.wait_for_state_ok()
        return owner[0]

    def wait_for_state_ok(self) -> None:
        """Until every running node reports cluster_state:ok and every running replica is
        in sync with its master (a replica that never synced cannot take over)."""

        def all_ok() -> bool:
            running = [node for node in self.nodes if node.running]
            return all(
                b"cluster_state:ok" in _info(node, "CLUSTER", "INFO")
                and b"master_link_status:down" not in _info(node, "INFO", "replication")
                for node in running
            )

        try:
            wait_until_ready(all_ok, lambda: True, self.timeout)
        except TimeoutError as exc:
            raise ServerStartError(f"cluster_state never became ok: {exc}") from exc

    def _create(self, redis_cli: str) -> None:
        addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
        options = ["--cluster-replicas", "1", "--cluster-yes"]
        result = subprocess.run(
            [redis_cli, "--cluster", "create", *addresses, *options],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServerStartError(f"redis-cli --cluster create failed:\n{result.stdout}")


def _info(node: RedisServer, *command: str) -> bytes:
    try:
        return redis_command(node.port, *command)
    except OSError:
        return b""
