"""Servers that speak TLS, for tests/integration/test_tls.py: a throwaway CA with a server and
a client certificate (the openssl command), a redis-server whose only listener is its
`tls-port` (the plaintext port it starts on, to be seen ready, is closed once it is), with
an ACL user that may touch one key prefix only, and a RabbitMQ node with a TLS listener
that asks for the client's certificate, and a user with permissions on one vhost only."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from servers import LOOPBACK, RabbitMQServer, RedisServer, free_ports, redis_command, require_binary

VALID_DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_ca: Path  # a CA that signed none of these: a client trusting it trusts no server


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a
    second, unrelated CA; EC keys (quick to make)."""
    openssl = require_binary("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        run(
            "req", "-x509", *key, "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", VALID_DAYS, "-subj", f"/CN=taskq test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\nsubjectAltName=IP:{LOOPBACK},DNS:localhost\n"
            "authorityKeyIdentifier=keyid\n"
        )
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", VALID_DAYS,
            "-extfile", f"{name}.ext",
        )  # fmt: skip
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        untrusted_ca=directory / "other-ca.pem",
    )


class TLSRedisServer(RedisServer):
    """redis-server on `tls_port` only, asking for a client certificate, with the ACL user
    `acl_user` (password `acl_password`) limited to keys and channels under `acl_prefix`
    and to the commands a worker uses."""

    acl_user = "taskq-worker"
    acl_password = "worker-password"
    acl_prefix = "acl:"

    def __init__(self, directory: Path, certificates: Certificates) -> None:
        super().__init__(directory)
        self.certificates = certificates
        self.tls_port = 0

    def start(self) -> None:
        super().start()
        redis_command(self.port, "CONFIG", "SET", "port", "0")  # plaintext off

    def tls_url(self, login: str = "", **query: str) -> str:
        """`rediss://` to the TLS port, `query` as its parameters."""
        params = "&".join(f"{name}={value}" for name, value in query.items())
        return f"rediss://{login}{LOOPBACK}:{self.tls_port}/0" + (f"?{params}" if params else "")

    def _write_config(self, port: int, cluster_port: int) -> None:
        super()._write_config(port, cluster_port)
        self.tls_port = free_ports(1)[0]
        certs, prefix = self.certificates, self.acl_prefix
        lines = [
            f"tls-port {self.tls_port}",
            f"tls-cert-file {certs.server_cert}",
            f"tls-key-file {certs.server_key}",
            f"tls-ca-cert-file {certs.ca}",
            "tls-auth-clients yes",
            # A worker's commands on its own keys and channels; no admin, no KEYS, no FLUSH.
            f"user {self.acl_user} on >{self.acl_password} resetkeys ~{prefix}* resetchannels"
            f" &{prefix}* -@all +@read +@write +@stream +@pubsub +@scripting +@connection"
            " +@transaction +time +info -script|flush -script|kill -flushdb -flushall",
        ]
        with (self.directory / "redis.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")


class TLSRabbitMQServer(RabbitMQServer):
    """A RabbitMQ node with a TLS listener on `tls_port` that verifies the client's
    certificate, besides its plaintext one (which the readiness check uses), and the user
    `vhost_user` with every permission on `vhost` and none elsewhere."""

    vhost = "shop"
    vhost_user = "shop-worker"
    vhost_password = "shop-password"

    def __init__(self, directory: Path, certificates: Certificates) -> None:
        super().__init__(directory)
        self.certificates = certificates
        self.tls_port = 0

    def tls_url(self, login: str = "guest:guest", vhost: str = "") -> str:
        return f"amqps://{login}@{LOOPBACK}:{self.tls_port}/{vhost}"

    def start(self) -> None:
        super().start()
        self.ctl("add_vhost", self.vhost)
        self.ctl("add_user", self.vhost_user, self.vhost_password)
        self.ctl("set_permissions", "-p", self.vhost, self.vhost_user, ".*", ".*", ".*")

    def _prepare_fresh_directory(self) -> None:
        super()._prepare_fresh_directory()
        self.tls_port = free_ports(1)[0]
        certs = self.certificates
        (self.directory / "conf.d" / "tls.conf").write_text(
            f"listeners.ssl.1 = {LOOPBACK}:{self.tls_port}\n"
            f"ssl_options.cacertfile = {certs.ca}\n"
            f"ssl_options.certfile = {certs.server_cert}\n"
            f"ssl_options.keyfile = {certs.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )
