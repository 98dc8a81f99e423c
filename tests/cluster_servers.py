"""Throwaway clusters that survive the loss of one node, on loopback, for fail-over tests.

    cluster = ReplicatedRedisCluster(tmp_path)   # 3 masters, a replica each, AOF,
    cluster.start()                              # cluster-node-timeout 2 s
    cluster.startup_url(first=node)              # every node, that one first
    victim = cluster.master_of("{default}")      # the master serving that key's slot
    victim.kill()                                # SIGKILL; its replica takes over in ~3 s
    cluster.wait_for_failover("{default}")       # the promoted replica
    victim.start()                               # rejoins, as a replica

    rabbit = RabbitMQCluster(tmp_path)           # 3 nodes forming one cluster as they boot
    rabbit.start()                               # (classic_config peer discovery, ~30 s)
    rabbit.url(first=rabbit.nodes[1])            # Celery's fail-over list, that node first
    rabbit.leader_of("q")                        # the node leading quorum queue q
    rabbit.nodes[0].kill(); rabbit.nodes[0].start()   # SIGKILL; back into the cluster

Built from tests/servers.py's servers (same isolation: loopback only, every file under the
given directory, only our own pids signalled). Standard library only.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from servers import (
    CLUSTER_MASTERS,
    LOOPBACK,
    RabbitMQServer,
    RedisCluster,
    RedisServer,
    ServerStartError,
    end_process,
    epmd_answers,
    free_ports,
    redis_command,
    require_binary,
    wait_until_ready,
)

NODE_TIMEOUT_MS = 2000


class _ClusterNode(RedisServer):
    """A Redis Cluster node with AOF and a short `cluster-node-timeout`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, aof=True, cluster=True)

    def _write_config(self, port: int, cluster_port: int) -> None:
        super()._write_config(port, cluster_port)
        with (self.directory / "redis.conf").open("a") as config:  # the last value wins
            config.write(f"cluster-node-timeout {NODE_TIMEOUT_MS}\n")
            # The live masters serve their slots while a dead one's replica takes over (the
            # default refuses every command cluster-wide until then).
            config.write("cluster-require-full-coverage no\n")


class ReplicatedRedisCluster(RedisCluster):
    """Six Redis Cluster nodes on loopback: three masters sharing the slots, a replica each."""

    REPLICAS = 1

    def __init__(self, directory: Path, *, timeout: float = 60.0) -> None:
        super().__init__(directory, timeout=timeout)
        self.nodes = [_ClusterNode(self.directory / f"node{i}") for i in range(2 * CLUSTER_MASTERS)]

    def startup_url(self, first: RedisServer | None = None) -> str:
        """Every node as a startup node, `first` (default: the first node) named first."""
        first = first or self.nodes[0]
        ordered = [first, *(node for node in self.nodes if node is not first)]
        hosts = ",".join(f"{LOOPBACK}:{node.port}" for node in ordered)
        return f"redis://{hosts}/0?cluster=true"

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

    def _wait_for_state_ok(self) -> None:
        self.wait_for_state_ok()


def _info(node: RedisServer, *command: str) -> bytes:
    try:
        return redis_command(node.port, *command)
    except OSError:
        return b""


class _ClusterRabbit(RabbitMQServer):
    """A RabbitMQ node that finds its peers through the cluster's epmd and shares its cookie."""

    def __init__(self, directory: Path, epmd_port: int, cookie: str) -> None:
        super().__init__(directory)
        self._shared_epmd_port = epmd_port
        self._cookie = cookie
        self.peers: list[str] = []  # every node's name: they form the cluster as they boot

    def _prepare_fresh_directory(self) -> None:
        super()._prepare_fresh_directory()
        self._epmd_port = self._shared_epmd_port
        with (self.directory / "rabbitmq.conf").open("a") as config:
            config.write("cluster_formation.peer_discovery_backend = classic_config\n")
            for index, peer in enumerate(self.peers, 1):
                config.write(f"cluster_formation.classic_config.nodes.{index} = {peer}\n")
        cookie = self.directory / "home" / ".erlang.cookie"
        cookie.unlink(missing_ok=True)
        cookie.write_text(self._cookie)
        cookie.chmod(0o400)

    def _start_epmd(self) -> bool:
        return True  # the cluster's, running while the cluster is


class RabbitMQCluster:
    """Three RabbitMQ nodes on loopback joined into one cluster (a private epmd and cookie)."""

    def __init__(self, directory: Path, *, size: int = 3, timeout: float = 120.0) -> None:
        self.directory = directory.resolve()
        self.timeout = timeout
        self._epmd_port = free_ports(1)[0]
        cookie = secrets.token_hex(16)
        self.nodes = [
            _ClusterRabbit(self.directory / f"node{i}", self._epmd_port, cookie)
            for i in range(size)
        ]
        for node in self.nodes:
            node.peers = [peer.nodename for peer in self.nodes]
        self._epmd: subprocess.Popen[bytes] | None = None

    def url(self, first: RabbitMQServer | None = None) -> str:
        """Celery's fail-over list of every node, `first` (default: the first node) first."""
        first = first or self.nodes[0]
        ordered = [first, *(node for node in self.nodes if node is not first)]
        return ";".join(node.url for node in ordered)

    def start(self) -> None:
        require_binary("epmd", "erlang-base")
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start_epmd()
            with ThreadPoolExecutor(len(self.nodes)) as pool:  # booting, they join each other
                for started in [pool.submit(node.start) for node in self.nodes]:
                    started.result()
            self.wait_for_members(len(self.nodes))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._epmd is not None:
            end_process(self._epmd, signal.SIGTERM)
            self._epmd = None

    def wait_for_members(self, count: int) -> None:
        """Until a running node counts `count` running nodes in the cluster."""

        def running() -> bool:
            live = next(node for node in self.nodes if node.running)
            status = live.ctl("cluster_status", "--formatter", "json")
            return status.count("@localhost") >= count and _running_nodes(status) == count

        try:
            wait_until_ready(running, lambda: True, self.timeout)
        except TimeoutError as exc:
            raise ServerStartError(f"the RabbitMQ cluster never had {count} nodes: {exc}") from exc

    def leader_of(self, queue: str) -> RabbitMQServer:
        """The running node leading quorum queue `queue`."""
        live = next(node for node in self.nodes if node.running)
        listed = live.ctl("list_queues", "name", "leader", "--no-table-headers", "-q")
        for line in listed.splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return next(node for node in self.nodes if node.nodename == leader.strip())
        raise LookupError(f"no quorum queue {queue!r}")

    def _start_epmd(self) -> None:
        log = (self.directory / "epmd.log").open("ab")
        with log:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self._epmd_port), "-address", LOOPBACK],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        epmd = self._epmd
        if not wait_until_ready(
            lambda: epmd_answers(self._epmd_port), lambda: epmd.poll() is None, 5.0
        ):
            raise ServerStartError(f"epmd did not start on port {self._epmd_port}")


def _running_nodes(status_json: str) -> int:
    return len(json.loads(status_json).get("running_nodes", []))
