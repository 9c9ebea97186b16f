"""`edgeloop local gateway add`: a gateway for a running `edgeloop local up`, as provisioning makes one in AWS.

The thing with its attributes and groups in moto's IoT registry (edgeloop.local.things), a client
certificate from the stack's CA with CN = thing name (mosquitto's ACL confines it to its topics),
and `gateway.json`, the GatewayConfig `edgeloop gateway replay` and the gateway publisher read.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeloop.cloud.aws import reset_clients
from edgeloop.cloud.settings import temporary_environment
from edgeloop.greengrass_components.gateway.config import GatewayConfig, validated
from edgeloop.local.aws import REAL_ACCOUNT_VARIABLES
from edgeloop.local.env_file import env_file_path, read_env_file
from edgeloop.local.mosquitto import BROKER_IDENTITY, CLOUD_IDENTITY, PROBE_IDENTITY
from edgeloop.local.pki import CertificateAuthority
from edgeloop.local.runtime import LocalRuntime
from edgeloop.local.stack import RUNTIME_DIR
from edgeloop.local.things import register_gateway
from edgeloop.local.up import process_alive
from edgeloop.model_runtime.model_format import RUNTIME_VERSION
from edgeloop.provisioning.request import BUFFER_FILE, CONFIG_FILE
from edgeloop.schemas import names
from edgeloop.schemas.model import architecture_of_machine

RESERVED_IDENTITIES = (CLOUD_IDENTITY, BROKER_IDENTITY, PROBE_IDENTITY)
CA_FILE = "ca.crt"
REQUIRED_VARIABLES = (
    "AWS_ENDPOINT_URL",
    names.LOCAL_BROKER_HOST_ENV,
    names.LOCAL_BROKER_DEVICE_PORT_ENV,
    names.LOCAL_DIR_ENV,
    names.LOCAL_PID_ENV,
    names.USE_CASE_ENV,
)


@dataclass(frozen=True)
class LocalGateway:
    config: GatewayConfig
    config_path: Path
    thing_arn: str


def running_stack_environment(local_dir: Path) -> dict[str, str]:
    """The environment a live `local up` wrote to `<local_dir>/local.env`; a clear error otherwise."""
    path = env_file_path(local_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: start `edgeloop local up --dir {local_dir}` first")
    env = read_env_file(path)
    missing = [key for key in REQUIRED_VARIABLES if not env.get(key)]
    if missing:
        raise ValueError(f"{path}: {', '.join(missing)} not set: not a file `edgeloop local up` wrote")
    pid = env[names.LOCAL_PID_ENV]
    if not pid.isdigit() or not process_alive(int(pid)):
        raise ValueError(f"{path}: {names.LOCAL_PID_ENV}={pid!r}: that `edgeloop local up` is not running any more")
    return env


@contextmanager
def using_stack(env: Mapping[str, str]) -> Iterator[None]:
    """This process's AWS clients on the local stack for a block (its variables set, a real account's unset)."""
    with temporary_environment(env, unset=REAL_ACCOUNT_VARIABLES):
        reset_clients()
        try:
            yield
        finally:
            reset_clients()


def add_gateway(
    thing_name: str,
    *,
    line_id: str,
    site: str,
    out_dir: Path,
    local_dir: Path,
    use_case: str | None = None,
    architecture: str | None = None,
    runtime_version: str | None = None,
) -> LocalGateway:
    """Certificate, registry entry and gateway.json for one gateway of the stack serving `local_dir`."""
    if thing_name in RESERVED_IDENTITIES:
        raise ValueError(f"thing name {thing_name!r} is reserved for the local stack's own identities")
    env = running_stack_environment(local_dir)
    out_dir = Path(out_dir).resolve()
    ca = CertificateAuthority.load(LocalRuntime.ca_dir(Path(env[names.LOCAL_DIR_ENV]) / RUNTIME_DIR))
    fields = {
        "thing_name": thing_name,
        "site": site,
        "line_id": line_id,
        "use_case": use_case or env[names.USE_CASE_ENV],
        "architecture": architecture or architecture_of_machine(),
        "broker_host": env[names.LOCAL_BROKER_HOST_ENV],
        "broker_port": env[names.LOCAL_BROKER_DEVICE_PORT_ENV],
        "cert_path": out_dir / f"{thing_name}.crt",  # where CertificateAuthority.issue writes them
        "key_path": out_dir / f"{thing_name}.key",
        "ca_path": out_dir / CA_FILE,
        "buffer_path": out_dir / BUFFER_FILE,
        "runtime_version": runtime_version or RUNTIME_VERSION,
    }
    config = validated(
        out_dir / CONFIG_FILE, "gateway config", lambda: GatewayConfig.model_validate(fields), root="<gateway>"
    )
    cert = ca.issue(thing_name, out_dir)
    if (cert.cert_path, cert.key_path) != (config.cert_path, config.key_path):
        raise RuntimeError(f"the CA wrote {cert.cert_path}, {cert.key_path}; the config names other files")
    shutil.copyfile(ca.cert_path, config.ca_path)
    with using_stack(env):
        arn = register_gateway(config)
    config_path = out_dir / CONFIG_FILE
    config_path.write_text(config.model_dump_json(indent=2, exclude_none=True) + "\n")
    return LocalGateway(config=config, config_path=config_path, thing_arn=arn)
