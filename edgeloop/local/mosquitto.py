"""A real mosquitto broker playing AWS IoT Core: mutual TLS, one identity per certificate, topic ACLs.

Each client's certificate CN becomes its username (`use_identity_as_username`), and the ACL
`pattern readwrite edgeloop/%u/#` confines a gateway to its own topics, as the IoT policy
`edgeloop/${iot:Connection.Thing.ThingName}/#` does in AWS. The cloud identity may use every
`edgeloop/` topic (the bridge and the local model delivery connect with it).

Client ids: IoT Core's policy lets a connection use only its thing's client id, so nobody can knock a
gateway offline or take over its session. mosquitto 2.0 has no "client id must equal username"
check; the nearest real guarantee is `use_username_as_clientid`, which replaces whatever client id a
client sends by its username (here the certificate CN), so a client can only ever take over its own
session. It is a listener option, so the broker opens two listeners: `device_port` enforces it (the
port for gateways), `port` does not (the cloud identity connects several clients with one
certificate: the bridge, deliveries, tests). A gateway certificate is still accepted on `port`
until the cloud identity has a CA of its own.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from edgeloop.local.pki import CertificateAuthority, IssuedCert
from edgeloop.local.ports import LOOPBACK, free_port
from edgeloop.local.processes import ManagedServer, stopped_with_parent
from edgeloop.schemas import names

CLOUD_IDENTITY = "edgeloop-cloud"
BROKER_IDENTITY = "edgeloop-broker"
PROBE_IDENTITY = "edgeloop-broker-probe"
FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
START_TIMEOUT_S = 15.0


def find_mosquitto() -> Path:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    if FALLBACK_BINARY.exists():
        return FALLBACK_BINARY
    raise FileNotFoundError(
        "mosquitto not found on PATH or at /usr/sbin/mosquitto: install it with `make mosquitto` "
        "(apt-get install mosquitto)"
    )


def acl_text(cloud_identity: str = CLOUD_IDENTITY) -> str:
    # `pattern` lines apply to every authenticated client; the `user` block adds the cloud's rights.
    # mosquitto emits no AWS lifecycle events: the cloud identity may play them (names.presence_topic).
    return (
        f"pattern readwrite {names.TOPIC_ROOT}/%u/#\n\nuser {cloud_identity}\ntopic readwrite {names.TOPIC_ROOT}/#\n"
        f"topic readwrite {names.PRESENCE_TOPIC_ROOT}/#\n"
    )


def _listener(port: int, server: IssuedCert, *, client_id_is_identity: bool) -> list[str]:
    lines = [
        f"listener {port} {LOOPBACK}",
        "protocol mqtt",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    if client_id_is_identity:
        # the client id a client sends is replaced by its username (its certificate's CN)
        lines.append("use_username_as_clientid true")
    return lines + [
        "tls_version tlsv1.2",
        f"cafile {server.ca_path}",
        f"certfile {server.cert_path}",
        f"keyfile {server.key_path}",
    ]


def config_text(port: int, server: IssuedCert, acl_path: Path, log_path: Path, device_port: int | None = None) -> str:
    """The broker's configuration: the shared listener on `port`, and, with `device_port`, the
    gateways' listener on which a client's id is its certificate's CN."""
    device = [] if device_port is None else _listener(device_port, server, client_id_is_identity=True)
    return "\n".join(
        [
            "per_listener_settings false",
            "persistence false",
            # The default of 1000 queued QoS1 messages per client drops data when a gateway's
            # backlog drains faster than the bridge takes it; IoT Core does not drop there.
            "max_queued_messages 100000",
            # Without `user`, mosquitto started as root drops to the `mosquitto` user, which may not
            # read a work directory under /tmp or the home directory; as non-root this is ignored.
            f"user {getpass.getuser()}",
            f"log_dest file {log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # use_identity_as_username gives every certificate holder a username, so nobody is
            # anonymous; mosquitto 2.0 defaults to false anyway, this keeps it explicit.
            "allow_anonymous false",
            f"acl_file {acl_path}",
            *_listener(port, server, client_id_is_identity=False),
            *device,
            "",
        ]
    )


class MosquittoBroker(ManagedServer):
    """Start with `.start()` or `with MosquittoBroker(...) as broker:`; clients connect to `.host:.port`,
    gateways that must not be impersonated to `.host:.device_port`."""

    name = "mosquitto"

    def __init__(self, workdir: Path, ca: CertificateAuthority, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.ca = ca
        self.host = LOOPBACK
        self._requested_port = port
        self.port: int | None = port
        self.device_port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def acl_path(self) -> Path:
        return self.workdir / "mosquitto.acl"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self) -> MosquittoBroker:
        self.refuse_second_start()
        binary = find_mosquitto()
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls_dir = self.workdir / "tls"
        server = self.ca.issue(BROKER_IDENTITY, tls_dir, server=True)
        probe = self.ca.issue(PROBE_IDENTITY, tls_dir)
        self.acl_path.write_text(acl_text())
        self.start_on_a_port(
            self._requested_port,
            lambda port: self._spawn(binary, port, server),
            lambda: self._accepts_tls(probe, self.port) and self._accepts_tls(probe, self.device_port),
            timeout_s=START_TIMEOUT_S,
            log=self.log_path,
        )
        return self

    def _spawn(self, binary: Path, port: int, server: IssuedCert) -> subprocess.Popen:
        self.device_port = free_port()  # a new one each attempt, as `port`
        while self.device_port == port:
            self.device_port = free_port()
        self.config_path.write_text(config_text(port, server, self.acl_path, self.log_path, self.device_port))
        with (self.workdir / "mosquitto.stderr").open("ab") as stderr:
            return subprocess.Popen(
                stopped_with_parent([str(binary), "-c", str(self.config_path)]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop it in order
            )

    def _accepts_tls(self, probe: IssuedCert, port: int | None) -> bool:
        """True once a full mutual-TLS handshake succeeds (the listener is up and the certs load)."""
        context = ssl.create_default_context(cafile=str(probe.ca_path))
        context.load_cert_chain(str(probe.cert_path), str(probe.key_path))
        try:
            with socket.create_connection((self.host, port), timeout=1.0) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.unwrap()  # a clean close_notify keeps an OpenSSL error out of the broker log
                    return True
        except (OSError, ssl.SSLError):
            return False
