"""The files provisioning writes: certificate, key, Amazon Root CA 1, and either the gateway's
connection config (gateway.json) or, for a Greengrass core device, the nucleus config (config.yaml,
the installer's --init-config) with an install script.

Amazon Root CA 1 is taken from the local trust store (the system bundle or certifi's): nothing is
downloaded, and `--ca-file` names another PEM file (e.g. one fetched with
`curl -o AmazonRootCA1.pem https://www.amazontrust.com/repository/AmazonRootCA1.pem`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.schemas import names

from .request import (
    AMAZON_ROOT_CA,
    BUFFER_FILE,
    CA_FILE,
    CERT_FILE,
    CONFIG_FILE,
    INSTALL_SCRIPT,
    KEY_FILE,
    MQTT_TLS_PORT,
    NUCLEUS_CONFIG_FILE,
    ProvisioningError,
    ProvisioningRequest,
)

SYSTEM_CA_FILES = (Path("/etc/ssl/certs/Amazon_Root_CA_1.pem"),)
NUCLEUS_COMPONENT = "aws.greengrass.Nucleus"
INSTALLER_URL = "https://d2s8p88vqu9w66.cloudfront.net/releases/greengrass-{version}.zip"
INSTALLER_DIR = "GreengrassInstaller"


def output_paths(request: ProvisioningRequest) -> dict[str, Path]:
    out_dir = Path(request.out_dir)
    paths = {"cert": out_dir / CERT_FILE, "key": out_dir / KEY_FILE, "ca": out_dir / CA_FILE}
    if request.greengrass:
        return {"config": out_dir / NUCLEUS_CONFIG_FILE, **paths, "script": out_dir / INSTALL_SCRIPT}
    return {"config": out_dir / CONFIG_FILE, **paths}


def refuse_existing_files(paths: dict[str, Path]) -> None:
    present = [str(p) for p in paths.values() if p.exists()]
    if present:
        raise ProvisioningError(f"{present} already exist: choose another --out or pass --force to overwrite them")


def ca_pem(ca_file: Path | None) -> bytes:
    from cryptography import x509

    if ca_file is not None:
        try:
            certificate = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise ProvisioningError(f"ca_file={str(ca_file)!r} is not a readable PEM certificate: {exc}") from None
        return _pem(certificate)
    for bundle in _ca_bundles():
        try:
            certificates = x509.load_pem_x509_certificates(bundle.read_bytes())
        except (OSError, ValueError):
            continue
        for certificate in certificates:
            common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            if any(cn.value == AMAZON_ROOT_CA for cn in common_names):
                return _pem(certificate)
    raise ProvisioningError(f"{AMAZON_ROOT_CA!r} not found in {[str(b) for b in _ca_bundles()]}: pass --ca-file")


def _ca_bundles() -> list[Path]:
    bundles = [p for p in SYSTEM_CA_FILES if p.exists()]
    try:
        import certifi

        bundles.append(Path(certifi.where()))
    except ImportError:
        pass
    return bundles


def _pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM)


def write_credentials(paths: dict[str, Path], certificate: dict, ca: bytes) -> None:
    paths["cert"].parent.mkdir(parents=True, exist_ok=True)
    write(paths["cert"], certificate["certificatePem"].encode(), mode=0o644)
    write(paths["key"], certificate["keyPair"]["PrivateKey"].encode(), mode=0o600)
    write(paths["ca"], ca, mode=0o644)


def write_gateway_config(request: ProvisioningRequest, paths: dict[str, Path], endpoint: str) -> Path:
    """The MQTT gateway's connection config (GatewayConfig JSON), pointing at the files on the device."""
    device_dir = Path(request.device_dir) if request.device_dir else Path(request.out_dir).resolve()
    config = GatewayConfig(
        thing_name=request.thing_name,
        site=request.site,
        line_id=request.line_id,
        use_case=request.use_case,
        architecture=request.architecture,
        runtime_version=request.runtime_version,
        transport="mqtt",
        broker_host=endpoint,
        broker_port=MQTT_TLS_PORT,
        cert_path=device_dir / CERT_FILE,
        key_path=device_dir / KEY_FILE,
        ca_path=device_dir / CA_FILE,
        buffer_path=request.buffer_path or device_dir / BUFFER_FILE,
    )
    return config.to_file(paths["config"])


def nucleus_config(request: ProvisioningRequest, *, region: str, role_alias: str, endpoints: dict[str, str]) -> dict:
    """The partial nucleus config for `--init-config` ("Install AWS IoT Greengrass Core software with
    manual resource provisioning"), with interpolateComponentConfiguration on: the recipes'
    accessControl names `{iot:thingName}`, which the nucleus substitutes only then (nucleus >= 2.6.0).

    It also seeds the edgeloop components' per-device configuration: a deployment merges the recipe's
    DefaultConfiguration under values already on the device (nucleus KernelConfigResolver), so the
    fleet-wide base deployment keeps this gateway's own site and line."""
    root = request.greengrass_root
    return {
        "system": {
            "certificateFilePath": str(root / CERT_FILE),
            "privateKeyPath": str(root / KEY_FILE),
            "rootCaPath": str(root / CA_FILE),
            "rootpath": str(root),
            "thingName": request.thing_name,
        },
        "services": {
            NUCLEUS_COMPONENT: {
                "componentType": "NUCLEUS",
                "version": request.nucleus_version,
                "configuration": {
                    "awsRegion": region,
                    "iotRoleAlias": role_alias,
                    "iotDataEndpoint": endpoints["iot:Data-ATS"],
                    "iotCredEndpoint": endpoints["iot:CredentialProvider"],
                    "interpolateComponentConfiguration": True,
                },
            },
            names.GATEWAY_COMPONENT: {
                "configuration": {
                    "site": request.site,
                    "lineId": request.line_id,
                    "useCase": request.use_case,
                    "runtimeVersion": request.runtime_version,
                }
            },
            names.MODEL_RUNNER_COMPONENT: {
                "configuration": {
                    "lineId": request.line_id,
                    "useCase": request.use_case,
                    "runtimeVersion": request.runtime_version,
                }
            },
        },
    }


def install_commands(request: ProvisioningRequest) -> list[str]:
    """What the OT engineer runs on the gateway, inside the copied --out folder (the manual-provisioning
    install of the Greengrass v2 developer guide, with this device's files and nucleus version)."""
    root = request.greengrass_root
    q = shlex.quote
    return [
        f"sudo mkdir -p {q(str(root))} && sudo chmod 755 {q(str(root.parent))}",
        f"sudo install -m 644 {CERT_FILE} {CA_FILE} {q(str(root))}/",
        f"sudo install -m 600 {KEY_FILE} {q(str(root))}/",
        f"curl -sSf {INSTALLER_URL.format(version=request.nucleus_version)} -o greengrass-nucleus.zip",
        f"unzip -q -o greengrass-nucleus.zip -d {INSTALLER_DIR} && rm greengrass-nucleus.zip",
        f'sudo -E java -Droot="{root}" -Dlog.store=FILE -jar ./{INSTALLER_DIR}/lib/Greengrass.jar '
        f"--init-config ./{NUCLEUS_CONFIG_FILE} --component-default-user ggc_user:ggc_group "
        "--setup-system-service true",
    ]


def write_greengrass_files(request: ProvisioningRequest, paths: dict[str, Path], config: dict) -> Path:
    write(paths["config"], yaml.safe_dump(config, sort_keys=False).encode(), mode=0o644)
    script = "\n".join(["#!/bin/sh", "# Run on the gateway, in this folder.", "set -eu", *install_commands(request)])
    write(paths["script"], f"{script}\n".encode(), mode=0o755)
    return paths["config"]


def write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` atomically; the private key is never readable by others, not even briefly."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an old tmp file may have had other permissions
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
