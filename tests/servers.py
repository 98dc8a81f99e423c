"""Throwaway Redis, Redis Cluster and RabbitMQ servers on loopback, for the test suite.

Every server is a child process of the test run that listens on 127.0.0.1 only and keeps all
its files (config, data, logs) under a directory the caller gives. Nothing is shared with a
system service, and nothing is ever signalled by name: only the pids started here.

    redis = RedisServer(tmp_path, aof=True)
    redis.start()         # redis.url == "redis://127.0.0.1:PORT/0", once it answers +PONG
    redis.kill()          # crash: SIGKILL by pid
    redis.start()         # same port, same data
    redis.stop()          # graceful: SIGTERM by pid

Standard library only. Needs Debian's redis-server (with redis-tools) and rabbitmq-server
packages; a missing binary raises ServerNotInstalled.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Below Linux's ephemeral range (32768-60999): the kernel never hands these ports to outgoing
# connections in the seconds between picking one and the server binding it.
PORT_RANGE = (20000, 32767)
# A fresh server whose port was taken meanwhile is retried on new ports.
START_ATTEMPTS = 3
STOP_TIMEOUT = 60.0
POLL_INTERVAL = 0.05
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The /usr/sbin wrappers would switch to the rabbitmq user (other HOME, other Erlang cookie,
# no access to our directory) when run as root; these are the upstream scripts.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# Erlang distribution (node <-> rabbitmqctl) on loopback only.
LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"
# Set in the environment of every RabbitMQ process started here (the Erlang VM inherits it):
# proves a pid read from a pid file is still ours before it is signalled.
OWNER_VARIABLE = "TASKQ_TEST_SERVER_DIR"
CLUSTER_MASTERS = 3


class ServerNotInstalled(RuntimeError):
    """A server binary is missing; the message names the package that provides it."""


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries the tail of its logs."""


def free_ports(count: int) -> list[int]:
    """Returns `count` distinct TCP ports that are free on loopback right now."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket()
            try:
                sock.bind((LOOPBACK, random.randint(*PORT_RANGE)))
            except OSError:
                sock.close()
                continue
            held.append(sock)  # stays bound until all are picked, so they are distinct
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Sends one command to a Redis on loopback; returns a status or error line as is
    (b"+PONG", b"-LOADING ...") or the body of a bulk string reply."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(arg.encode())}\r\n{arg}\r\n" for arg in args)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        with sock.makefile("rb") as reply:
            line = reply.readline().rstrip(b"\r\n")
            if not line.startswith(b"$"):
                return line
            length = int(line[1:])
            return reply.read(length) if length > 0 else b""


def redis_answers_ping(port: int, *, password: str | None = None) -> bool:
    """True once Redis answers +PONG (while loading its AOF it answers -LOADING); when it
    wants a `password`, once it asks for it (-NOAUTH)."""
    expected = b"-NOAUTH" if password else b"+PONG"
    try:
        return redis_command(port, "PING").startswith(expected)
    except OSError:
        return False


def amqp_answers(port: int) -> bool:
    """True when the port answers the AMQP 0-9-1 protocol header with a method frame
    (Connection.Start): the broker accepts clients."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=3) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def epmd_answers(port: int) -> bool:
    """True when an epmd answers NAMES_REQ on the port (its reply opens with its own port)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"\x00\x01n")
            return sock.recv(4) == port.to_bytes(4, "big")
    except OSError:
        return False


def wait_until_ready(ready: Callable[[], bool], alive: Callable[[], bool], timeout: float) -> bool:
    """Polls `ready` until it holds (True) or `alive` stops holding (False);
    raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if not alive():
            return False
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"not ready within {timeout:g}s")


def end_process(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Sends `sig` to a child we started, waits for it, and SIGKILLs it after STOP_TIMEOUT.
    Popen never signals a pid it has already reaped, so this cannot hit a stranger."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(*paths: Path, lines: int = 20) -> str:
    parts = []
    for path in paths:
        if path.is_file() and path.stat().st_size:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"---- last lines of {path} ----\n" + "\n".join(tail))
    return "\n".join(parts) or "(no log output)"


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
    if path is None:
        raise ServerNotInstalled(f"{name} not found (Debian package {package})")
    return path


class RedisServer:
    """One redis-server under `directory`, on a free loopback port picked at the first start.

    No persistence by default. `aof=True` writes an append-only file with
    `appendfsync always`, so every write acknowledged to a client survives even kill().
    `cluster=True` makes it a Redis Cluster node (see RedisCluster). With a `password`
    (`requirepass`) its `url` carries it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        aof: bool = False,
        cluster: bool = False,
        password: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.directory = directory.resolve()
        self.aof = aof
        self.cluster = cluster
        self.password = password
        self.timeout = timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = f":{self.password}@" if self.password else ""
        return f"redis://{login}{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        """Starts the server; returns once it answers PING with +PONG. The first start picks
        the port; later ones reuse it and the data (restart and crash tests)."""
        if self.running:
            raise RuntimeError(f"redis already running in {self.directory}")
        binary = require_binary("redis-server", "redis-server")
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        fresh = self.port == 0
        for _ in range(START_ATTEMPTS if fresh else 1):
            if fresh:
                self._write_config(*free_ports(2))
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            if self._launch(binary):
                return
            new_log = self.log_file.read_bytes()[log_offset:]
            if not (fresh and b"Address already in use" in new_log):
                break
        raise ServerStartError(
            f"redis-server exited before it was ready\n{log_tail(self.log_file)}"
        )

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM). Keeps the directory; start() brings it back."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, a crash: only what was on disk survives."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stops (if running) and starts again on the same port with the same data."""
        self.stop()
        self.start()

    def _launch(self, binary: str) -> bool:
        """Starts the process and waits for +PONG; False if it died first."""
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, str(self.directory / "redis.conf")],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is pytest's to handle
            )
        try:
            if wait_until_ready(
                lambda: redis_answers_ping(self.port, password=self.password),
                lambda: self.running,
                self.timeout,
            ):
                return True
        except TimeoutError as exc:
            self.kill()
            raise ServerStartError(
                f"redis on port {self.port}: {exc}\n{log_tail(self.log_file)}"
            ) from exc
        self._end(signal.SIGKILL)
        return False

    def _end(self, sig: signal.Signals) -> None:
        if self._process is not None:
            end_process(self._process, sig)
            self._process = None

    def _write_config(self, port: int, cluster_port: int) -> None:
        self.port = port
        lines = [
            f"bind {LOOPBACK}",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.directory / "data"}"',
            'logfile ""',
            'save ""',  # never an RDB snapshot, not even at shutdown
            f"appendonly {'yes' if self.aof else 'no'}",
            "appendfsync always",
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                # Explicit: the default bus port (port + 10000) may be taken or ephemeral.
                f"cluster-port {cluster_port}",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 5000",
            ]
        (self.directory / "redis.conf").write_text("\n".join(lines) + "\n")


class RedisCluster:
    """Three Redis Cluster masters on loopback sharing all 16384 slots, no replicas."""

    REPLICAS = 0  # per master

    def __init__(self, directory: Path, *, timeout: float = 30.0) -> None:
        self.directory = directory.resolve()
        self.timeout = timeout
        self.nodes = [
            RedisServer(self.directory / f"node{index}", cluster=True)
            for index in range(CLUSTER_MASTERS)
        ]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        """Starts the nodes, assigns the slots, and returns once every node reports
        cluster_state:ok."""
        redis_cli = require_binary("redis-cli", "redis-tools")
        try:
            for node in self.nodes:
                node.start()
            self._create(redis_cli)
            self._wait_for_state_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _create(self, redis_cli: str) -> None:
        addresses = [f"{host}:{port}" for host, port in self.startup_nodes]
        result = subprocess.run(
            [
                redis_cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.REPLICAS),
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )

    def _wait_for_state_ok(self) -> None:
        def all_ok() -> bool:
            return all(b"cluster_state:ok" in self._cluster_info(node) for node in self.nodes)

        try:
            wait_until_ready(all_ok, lambda: all(node.running for node in self.nodes), self.timeout)
        except TimeoutError as exc:
            raise ServerStartError(f"cluster_state never became ok: {exc}") from exc

    @staticmethod
    def _cluster_info(node: RedisServer) -> bytes:
        try:
            return redis_command(node.port, "CLUSTER", "INFO")
        except OSError:
            return b""


class RabbitMQServer:
    """One RabbitMQ node under `directory`, with its own epmd, node name, Erlang cookie,
    config, data and logs, and its AMQP, distribution and epmd ports on loopback.

    Start it once per test session: a first start takes 5-11 s, a restart 5-7 s.
    """

    def __init__(self, directory: Path, *, timeout: float = 120.0) -> None:
        self.directory = directory.resolve()
        self.timeout = timeout
        self.nodename = f"taskq-test-{secrets.token_hex(4)}@localhost"
        self.port = 0
        self._dist_port = 0
        self._epmd_port = 0
        self._server: subprocess.Popen[bytes] | None = None  # the rabbitmq-server shell wrapper
        self._epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @property
    def vm_pid(self) -> int | None:
        """The Erlang VM's pid (the wrapper's child), if it is running and ours."""
        try:
            pid = int((self.directory / "beam.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if self._owns(pid) else None

    def start(self) -> None:
        """Starts the node; returns once it answers AMQP and `rabbitmqctl await_startup`.
        The first start picks ports; later ones reuse them, the node name and the data."""
        if self.running:
            raise RuntimeError(f"rabbitmq already running in {self.directory}")
        require_binary("epmd", "erlang-base")
        if not (RABBITMQ_BIN / "rabbitmq-server").is_file():
            raise ServerNotInstalled(
                f"{RABBITMQ_BIN}/rabbitmq-server not found (Debian package rabbitmq-server)"
            )
        fresh = self.port == 0
        for _ in range(START_ATTEMPTS if fresh else 1):
            if fresh:
                self._prepare_fresh_directory()
            if self._start_epmd() and self._launch():
                self._await_startup()
                return
            port_taken = self._epmd is None or self._log_mentions(
                b"eaddrinuse", b"already in use", b"dist_port_already_used"
            )
            self.stop()
            if not (fresh and port_taken):
                break
        raise ServerStartError(f"rabbitmq-server did not start\n{self._log_tails()}")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM to the wrapper, which stops the broker cleanly), then
        the private epmd. Keeps the directory; start() brings the node back."""
        if self._server is not None:
            vm_pid = self.vm_pid
            end_process(self._server, signal.SIGTERM)
            self._server = None
            if vm_pid is not None:  # only still there if the wrapper had died without it
                self._end_vm(vm_pid, signal.SIGTERM)
        if self._epmd is not None:
            end_process(self._epmd, signal.SIGTERM)
            self._epmd = None

    def kill(self) -> None:
        """SIGKILL the broker (a crash). Its epmd stays up for the next start(); stop() ends it."""
        vm_pid = self.vm_pid
        if vm_pid is not None:
            self._end_vm(vm_pid, signal.SIGKILL)
        if self._server is not None:
            end_process(self._server, signal.SIGKILL)
            self._server = None

    def restart(self) -> None:
        """Stops (if running) and starts again: same ports, node name and data."""
        self.stop()
        self.start()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Runs `rabbitmqctl ARGS` against this node; returns its stdout, raises on failure."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self._environment(),
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _prepare_fresh_directory(self) -> None:
        """New ports and config; a half-booted earlier attempt leaves nothing behind."""
        self.port, self._dist_port, self._epmd_port = free_ports(3)
        for name in ("mnesia", "log"):
            shutil.rmtree(self.directory / name, ignore_errors=True)
        for name in ("home", "mnesia", "log", "conf.d"):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq.conf").write_text(
            # the default (50MB) disk alarm blocks publishers on a nearly full CI disk
            "disk_free_limit.absolute = 1MB\nlog.console = false\nlog.file.level = info\n"
        )
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's

    def _environment(self) -> dict[str, str]:
        """A clean environment (like env -i): RabbitMQ also reads unprefixed variables
        (NODENAME, LOGS, ...) and /etc/rabbitmq, so everything is pinned inside the directory."""
        home = self.directory
        return {
            "PATH": SYSTEM_PATH,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            OWNER_VARIABLE: str(home),
            "HOME": str(home / "home"),  # the node's .erlang.cookie lives here
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "ERL_AFLAGS": "-start_epmd false",
            "ERL_CRASH_DUMP": str(home / "log" / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(home / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_LOGS": str(home / "log" / "rabbit.log"),
            "RABBITMQ_PID_FILE": str(home / "beam.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": LOOPBACK_DIST,
            "RABBITMQ_CTL_ERL_ARGS": LOOPBACK_DIST,
        }

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.directory / "log" / log_name).open("ab") as log:
            return subprocess.Popen(
                args,
                env=self._environment(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is pytest's to handle
            )

    def _start_epmd(self) -> bool:
        """Starts the private epmd unless ours still runs (after kill()). epmd exits at once
        (even with status 0) when its port is taken, so it counts only if it stays alive."""
        if self._epmd is not None and self._epmd.poll() is None:
            return True
        epmd = self._spawn(
            ["epmd", "-port", str(self._epmd_port), "-address", LOOPBACK], "epmd.log"
        )

        def alive() -> bool:
            return epmd.poll() is None

        with contextlib.suppress(TimeoutError):
            if wait_until_ready(lambda: epmd_answers(self._epmd_port) and alive(), alive, 5.0):
                self._epmd = epmd
                return True
        end_process(epmd, signal.SIGKILL)
        return False

    def _launch(self) -> bool:
        """Starts the wrapper and waits for AMQP; False if it died first."""
        (self.directory / "beam.pid").unlink(missing_ok=True)
        self._server = self._spawn([str(RABBITMQ_BIN / "rabbitmq-server")], "server.log")
        try:
            return wait_until_ready(
                lambda: amqp_answers(self.port), lambda: self.running, self.timeout
            )
        except TimeoutError as exc:
            tails = self._log_tails()
            self.stop()
            raise ServerStartError(f"rabbitmq on port {self.port}: {exc}\n{tails}") from exc

    def _await_startup(self) -> None:
        """AMQP answers once the listeners are up; this also proves rabbitmqctl reaches the
        node, which tests use (list_queues, close_all_connections, ...)."""
        try:
            self.ctl("await_startup", timeout=self.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            self.stop()
            raise ServerStartError(f"{exc}\n{self._log_tails()}") from exc

    def _owns(self, pid: int) -> bool:
        """True if `pid` is alive, not a zombie, and carries our directory in its environment."""
        proc = Path(f"/proc/{pid}")
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return False
        return state != "Z" and f"{OWNER_VARIABLE}={self.directory}".encode() in environ

    def _end_vm(self, pid: int, sig: signal.Signals) -> None:
        """Signals the Erlang VM (the wrapper's child, not ours) and waits for it to go,
        with SIGKILL after STOP_TIMEOUT. The VM handles SIGTERM as a clean stop."""
        deadline = time.monotonic() + STOP_TIMEOUT
        self._signal_if_ours(pid, sig)
        while self._owns(pid):
            if time.monotonic() > deadline:
                self._signal_if_ours(pid, signal.SIGKILL)
            time.sleep(POLL_INTERVAL)

    def _signal_if_ours(self, pid: int, sig: signal.Signals) -> None:
        if self._owns(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _log_files(self) -> list[Path]:
        log = self.directory / "log"
        return [log / "rabbit.log", log / "server.log", log / "epmd.log"]

    def _log_mentions(self, *needles: bytes) -> bool:
        texts = [path.read_bytes() for path in self._log_files() if path.is_file()]
        return any(needle in text for needle in needles for text in texts)

    def _log_tails(self) -> str:
        return log_tail(*self._log_files())
