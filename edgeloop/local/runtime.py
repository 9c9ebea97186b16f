"""The embedded local runtime: a CA, moto_server and mosquitto, wired into this process's environment.

    with LocalRuntime(workdir, ["line-1-gw"]) as runtime:
        runtime.certs["line-1-gw"]   # the gateway's mTLS identity (CN = thing name)
        runtime.register_gateway(gateway_config)  # its thing in moto's IoT registry (ingest checks lines)
        runtime.cloud_cert           # the bridge's / local delivery's identity
        client("s3")                 # talks to moto_server: AWS_ENDPOINT_URL is set

Both servers are child processes stopped by PID when the block ends, on SIGINT/SIGTERM, and at
interpreter exit, so a demo interrupted with Ctrl-C leaves nothing running; should this process be
killed outright, they get a parent-death SIGTERM (edgeloop.local.processes.stopped_with_parent).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from edgeloop.cloud.aws import reset_clients
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.local.aws import REAL_ACCOUNT_VARIABLES, LocalResources, create_local_resources, local_aws_environment
from edgeloop.local.mosquitto import CLOUD_IDENTITY, MosquittoBroker
from edgeloop.local.moto_server import MotoServer
from edgeloop.local.pki import CertificateAuthority, IssuedCert
from edgeloop.local.things import register_gateway
from edgeloop.schemas import names

log = logging.getLogger(__name__)

CA_NAME = "edgeloop-local-ca"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LocalRuntime:
    def __init__(self, workdir: Path, thing_names: Sequence[str]) -> None:
        if isinstance(thing_names, str):
            raise TypeError(f"thing_names must be a sequence of names, got the string {thing_names!r}")
        duplicates = sorted(t for t, n in Counter(thing_names).items() if n > 1)
        if duplicates:
            raise ValueError(f"thing_names lists {duplicates} more than once")
        self._check_not_cloud(thing_names)
        self.workdir = Path(workdir).resolve()
        self.thing_names = tuple(thing_names)
        self.ca: CertificateAuthority | None = None
        self.certs: dict[str, IssuedCert] = {}
        self.cloud_cert: IssuedCert | None = None
        self.moto: MotoServer | None = None
        self.broker: MosquittoBroker | None = None
        self.env: dict[str, str] = {}
        self.resources: LocalResources | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_handlers: dict[int, object] = {}

    @staticmethod
    def _check_not_cloud(thing_names: Sequence[str]) -> None:
        if CLOUD_IDENTITY in thing_names:
            raise ValueError(f"thing name {CLOUD_IDENTITY!r} is reserved for the cloud identity")

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @staticmethod
    def ca_dir(workdir: Path) -> Path:
        """Where the runtime working in `workdir` keeps its CA (`local gateway add` signs with it)."""
        return Path(workdir) / "pki" / "ca"

    # --- set-up -----------------------------------------------------------------------------------
    def __enter__(self) -> LocalRuntime:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._install_stop_hooks()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.ca = CertificateAuthority.create(self.ca_dir(self.workdir), CA_NAME)
        for thing in self.thing_names:
            self.issue_cert(thing)
        self.cloud_cert = self.ca.issue(CLOUD_IDENTITY, self.pki_dir / "cloud")
        self.moto = MotoServer(log_path=self.workdir / "moto_server.log").start()
        self.broker = MosquittoBroker(self.workdir / "mosquitto", self.ca).start()
        self.env = {**local_aws_environment(self.moto.endpoint_url), **self._broker_environment()}
        self._apply_environment()
        reset_clients()
        self.resources = create_local_resources()
        log.info(
            "local runtime up: moto_server %s, mosquitto %s:%s",
            self.moto.endpoint_url,
            self.broker.host,
            self.broker.port,
        )

    def _broker_environment(self) -> dict[str, str]:
        return {
            names.LOCAL_BROKER_HOST_ENV: self.broker.host,
            names.LOCAL_BROKER_PORT_ENV: str(self.broker.port),
            names.LOCAL_CLOUD_CERT_ENV: str(self.cloud_cert.cert_path),
            names.LOCAL_CLOUD_KEY_ENV: str(self.cloud_cert.key_path),
            names.LOCAL_CA_ENV: str(self.cloud_cert.ca_path),
        }

    def issue_cert(self, thing_name: str) -> IssuedCert:
        """A client certificate for one more gateway (CN = thing name), signed by the runtime's CA."""
        if self.ca is None:
            raise RuntimeError("the runtime is not started: use it as a context manager first")
        self._check_not_cloud([thing_name])
        cert = self.ca.issue(thing_name, self.pki_dir / "things")
        self.certs[thing_name] = cert
        return cert

    def register_gateway(self, gateway: GatewayConfig) -> str:
        """The gateway's thing, attributes and site/line groups in moto's IoT registry, as provisioning
        creates them in AWS (ingest refuses batches whose line the registry does not confirm)."""
        if self.moto is None:
            raise RuntimeError("the runtime is not started: use it as a context manager first")
        if gateway.thing_name not in self.certs:
            raise ValueError(f"thing_name={gateway.thing_name!r} has no certificate in this runtime: issue_cert first")
        return register_gateway(gateway)

    def _apply_environment(self) -> None:
        for key in (*self.env, *REAL_ACCOUNT_VARIABLES):
            self._saved_env.setdefault(key, os.environ.get(key))
        for key in REAL_ACCOUNT_VARIABLES:
            os.environ.pop(key, None)
        os.environ.update(self.env)

    def _restore_environment(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    # --- tear-down --------------------------------------------------------------------------------
    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop_processes()
        self._restore_environment()
        reset_clients()
        self._remove_stop_hooks()

    def stop_processes(self) -> None:
        """Stop mosquitto and moto_server by PID (safe to call more than once, from any hook)."""
        for server in (self.broker, self.moto):
            if server is None:
                continue
            try:
                server.stop()
            except Exception:  # keep going: the other server must be stopped too
                log.exception("could not stop %s (pid %s)", type(server).__name__, server.pid)

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in (self.moto, self.broker) if s is not None and s.pid is not None]

    def _install_stop_hooks(self) -> None:
        atexit.register(self.stop_processes)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in _STOP_SIGNALS:
            self._saved_handlers[signum] = signal.signal(signum, self._on_stop_signal)

    def _remove_stop_hooks(self) -> None:
        atexit.unregister(self.stop_processes)
        for signum, handler in self._saved_handlers.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(signum, handler)
        self._saved_handlers.clear()

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        log.warning("signal %s: stopping the local runtime", signal.Signals(signum).name)
        self.stop_processes()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)  # what a process killed by SIGTERM reports, but with clean-up
