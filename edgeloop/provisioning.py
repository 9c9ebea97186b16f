"""Provision a gateway in AWS IoT: thing with its context, certificate, policy, thing groups, config.

`edgeloop gateway provision NAME --site S --line L --arch A` calls `provision_gateway`, against
whatever endpoint boto3 is configured for (AWS, or moto in tests). In order:
1. check that the gateway policies the CDK stack defines exist (nothing is created otherwise);
2. create the thing (type names.GATEWAY_THING_TYPE, created if missing) with its context attributes
   names.GATEWAY_THING_ATTRIBUTES;
3. create a key pair and an active certificate, attach the policies to it and it to the thing;
4. add the thing to its site and line thing groups (created if missing);
5. write the gateway's connection config (GatewayConfig JSON) with certificate, key and CA files.
A failure after step 2 undoes what this run created. An existing thing is refused unless `force`:
then its attributes are updated, it moves to its new groups, and its old certificates are detached
and deactivated (kept for audit, no longer usable) once the new one is in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier, SemVer, ThingName, validation_problems
from edgeloop.schemas.model import Architecture

MQTT_TLS_PORT = 8883
CONFIG_FILE = "gateway.json"
CERT_FILE = "certificate.pem.crt"
KEY_FILE = "private.pem.key"
CA_FILE = "AmazonRootCA1.pem"
BUFFER_FILE = "buffer.db"
AMAZON_ROOT_CA = "Amazon Root CA 1"  # signs IoT Core's ATS data endpoints
SYSTEM_CA_FILES = (Path("/etc/ssl/certs/Amazon_Root_CA_1.pem"),)


class ProvisioningError(Exception):
    """Provisioning cannot go on; the message says why and what to do."""


def default_runtime_version() -> str:
    """The ModelRunner runtime this release ships (what the tiers' min_runtime_version compares to)."""
    from edgeloop.model_runtime.model_format import RUNTIME_VERSION

    return RUNTIME_VERSION


class ProvisioningRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    thing_name: ThingName
    site: Identifier
    line_id: Identifier
    architecture: Architecture
    use_case: Identifier = names.DEFAULT_USE_CASE
    runtime_version: SemVer = Field(default_factory=default_runtime_version)
    out_dir: Path = Path(".")
    device_dir: Path | None = Field(default=None, description="where the files live on the gateway (default: out_dir)")
    buffer_path: Path | None = Field(default=None, description="default: <device_dir>/buffer.db")
    greengrass: bool = Field(default=False, description="also attach the Greengrass core policy")
    ca_file: Path | None = Field(default=None, description=f"CA of the IoT endpoint (default: {AMAZON_ROOT_CA})")
    force: bool = False

    @classmethod
    def build(cls, **fields: Any) -> ProvisioningRequest:
        """Like the constructor, with every problem as field=value: message in one ValueError."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise ValueError(f"invalid provisioning request: {problems}") from None

    @property
    def policies(self) -> list[str]:
        return [names.GATEWAY_DATA_POLICY, *([names.GREENGRASS_CORE_POLICY] if self.greengrass else [])]

    @property
    def thing_groups(self) -> list[str]:
        return [names.site_thing_group(self.site), names.line_thing_group(self.line_id)]

    @property
    def attributes(self) -> dict[str, str]:
        return {
            name: str(getattr(self, name).value if name == "architecture" else getattr(self, name))
            for name in names.GATEWAY_THING_ATTRIBUTES
        }


@dataclass(frozen=True)
class ProvisionedGateway:
    thing_name: str
    thing_arn: str
    certificate_id: str
    certificate_arn: str
    policies: list[str]
    thing_groups: list[str]
    config_path: Path
    cert_path: Path
    key_path: Path
    ca_path: Path
    endpoint: str
    retired_certificates: list[str] = field(default_factory=list)


@dataclass
class _Undo:
    """What this run created, to remove again if a later step fails."""

    thing_created: str | None = None
    certificate: dict | None = None
    attached_policies: list[str] = field(default_factory=list)
    thing_attached: bool = False


def register_thing(request: ProvisioningRequest, *, iot: Any) -> str:
    """Only the registry part of provisioning (thing type, thing with its context attributes, site
    and line groups), without certificates; idempotent, so a rerun completes a failed one.
    Returns the thing ARN. The local runtime registers its gateways with it."""
    _ensure_thing_type(iot)
    arn = _put_thing(iot, request, _describe_thing(iot, request.thing_name), _Undo())
    _join_groups(iot, request)
    return arn


def provision_gateway(request: ProvisioningRequest, *, iot: Any = None) -> ProvisionedGateway:
    if iot is None:
        from edgeloop.cloud.aws import client

        iot = client("iot")
    _require_policies(iot, request.policies)
    ca_pem = _ca_pem(request.ca_file)
    existing = _describe_thing(iot, request.thing_name)
    if existing is not None and not request.force:
        raise ProvisioningError(
            f"thing {request.thing_name!r} already exists ({existing['thingArn']}): pass --force to re-provision it "
            "(its attributes and groups are updated, a new certificate is issued and its current certificates "
            "are detached and deactivated)"
        )
    out_paths = _output_paths(request.out_dir)
    if not request.force:
        _refuse_existing_files(out_paths)
    endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    _ensure_thing_type(iot)
    undo = _Undo()
    try:
        thing_arn = _put_thing(iot, request, existing, undo)
        old_certificates = _certificates_of(iot, request.thing_name) if existing else []
        certificate = iot.create_keys_and_certificate(setAsActive=True)
        undo.certificate = certificate
        for policy in request.policies:
            iot.attach_policy(policyName=policy, target=certificate["certificateArn"])
            undo.attached_policies.append(policy)
        iot.attach_thing_principal(thingName=request.thing_name, principal=certificate["certificateArn"])
        undo.thing_attached = True
        _join_groups(iot, request)
        config_path = _write_files(request, out_paths, certificate, ca_pem, endpoint)
    except Exception:
        _roll_back(iot, request.thing_name, undo)
        raise
    retired = [_retire_certificate(iot, request.thing_name, arn) for arn in old_certificates]
    return ProvisionedGateway(
        thing_name=request.thing_name,
        thing_arn=thing_arn,
        certificate_id=certificate["certificateId"],
        certificate_arn=certificate["certificateArn"],
        policies=request.policies,
        thing_groups=request.thing_groups,
        config_path=config_path,
        cert_path=out_paths["cert"],
        key_path=out_paths["key"],
        ca_path=out_paths["ca"],
        endpoint=endpoint,
        retired_certificates=retired,
    )


# --- checks ---------------------------------------------------------------------------------------
def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _require_policies(iot: Any, policies: list[str]) -> None:
    missing = []
    for policy in policies:
        try:
            iot.get_policy(policyName=policy)
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            missing.append(policy)
    if missing:
        raise ProvisioningError(
            f"IoT policies {missing} do not exist in this account and region: deploy the edgeloop CDK stack "
            "first (it defines them, see cdk/constructs/iot.py)"
        )


def _describe_thing(iot: Any, thing_name: str) -> dict | None:
    try:
        return iot.describe_thing(thingName=thing_name)
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def _output_paths(out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "config": out_dir / CONFIG_FILE,
        "cert": out_dir / CERT_FILE,
        "key": out_dir / KEY_FILE,
        "ca": out_dir / CA_FILE,
    }


def _refuse_existing_files(paths: dict[str, Path]) -> None:
    present = [str(p) for p in paths.values() if p.exists()]
    if present:
        raise ProvisioningError(f"{present} already exist: choose another --out or pass --force to overwrite them")


def _ca_pem(ca_file: Path | None) -> bytes:
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


# --- registry ------------------------------------------------------------------------------------
def _ensure_thing_type(iot: Any) -> None:
    try:
        iot.describe_thing_type(thingTypeName=names.GATEWAY_THING_TYPE)
        return
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
    try:
        iot.create_thing_type(
            thingTypeName=names.GATEWAY_THING_TYPE,
            thingTypeProperties={
                "thingTypeDescription": "edgeloop gateway: buffers sensor data, scores models, reports status",
                "searchableAttributes": list(names.GATEWAY_THING_TYPE_SEARCHABLE),
            },
        )
    except ClientError as exc:
        if _error_code(exc) != "ResourceAlreadyExistsException":  # created concurrently: fine
            raise


def _put_thing(iot: Any, request: ProvisioningRequest, existing: dict | None, undo: _Undo) -> str:
    payload = {"attributes": request.attributes}
    if existing is None:
        response = iot.create_thing(
            thingName=request.thing_name, thingTypeName=names.GATEWAY_THING_TYPE, attributePayload=payload
        )
        undo.thing_created = request.thing_name
        return response["thingArn"]
    # merge: attributes someone else added to the thing stay
    iot.update_thing(
        thingName=request.thing_name,
        thingTypeName=names.GATEWAY_THING_TYPE,
        attributePayload={**payload, "merge": True},
    )
    return existing["thingArn"]


def _certificates_of(iot: Any, thing_name: str) -> list[str]:
    principals = iot.list_thing_principals(thingName=thing_name)["principals"]
    return [p for p in principals if ":cert/" in p]


def _join_groups(iot: Any, request: ProvisioningRequest) -> None:
    wanted = {
        names.site_thing_group(request.site): ("site", {"site": request.site}),
        names.line_thing_group(request.line_id): ("line", {"line_id": request.line_id}),
    }
    for group, (kind, attributes) in wanted.items():
        _ensure_group(iot, group, f"edgeloop gateways of {kind} {next(iter(attributes.values()))}", attributes)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=request.thing_name)
    # a re-provisioned gateway that moved leaves its old site and line groups
    prefixes = (names.site_thing_group(""), names.line_thing_group(""))
    for group in iot.list_thing_groups_for_thing(thingName=request.thing_name)["thingGroups"]:
        name = group["groupName"]
        if name.startswith(prefixes) and name not in wanted:
            iot.remove_thing_from_thing_group(thingGroupName=name, thingName=request.thing_name)


def _ensure_group(iot: Any, group: str, description: str, attributes: dict[str, str]) -> None:
    try:
        iot.describe_thing_group(thingGroupName=group)
        return
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
    try:
        iot.create_thing_group(
            thingGroupName=group,
            thingGroupProperties={"thingGroupDescription": description, "attributePayload": {"attributes": attributes}},
        )
    except ClientError as exc:
        if _error_code(exc) != "ResourceAlreadyExistsException":
            raise


def _retire_certificate(iot: Any, thing_name: str, certificate_arn: str) -> str:
    """Detach an old certificate from the thing and its policies and deactivate it (kept for audit)."""
    iot.detach_thing_principal(thingName=thing_name, principal=certificate_arn)
    for policy in iot.list_attached_policies(target=certificate_arn)["policies"]:
        iot.detach_policy(policyName=policy["policyName"], target=certificate_arn)
    certificate_id = certificate_arn.rsplit("/", 1)[1]
    iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    return certificate_arn


def _roll_back(iot: Any, thing_name: str, undo: _Undo) -> None:
    """Best effort: remove what this run created; the original error is what the caller sees."""
    certificate = undo.certificate
    steps = []
    if certificate is not None:
        arn, cert_id = certificate["certificateArn"], certificate["certificateId"]
        if undo.thing_attached:
            steps.append(lambda: iot.detach_thing_principal(thingName=thing_name, principal=arn))
        steps += [lambda p=p: iot.detach_policy(policyName=p, target=arn) for p in undo.attached_policies]
        steps.append(lambda: iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE"))
        steps.append(lambda: iot.delete_certificate(certificateId=cert_id))
    if undo.thing_created:
        steps.append(lambda: iot.delete_thing(thingName=undo.thing_created))
    for step in steps:
        try:
            step()
        except ClientError:
            pass


# --- files ---------------------------------------------------------------------------------------
def _write_files(
    request: ProvisioningRequest, paths: dict[str, Path], certificate: dict, ca_pem: bytes, endpoint: str
) -> Path:
    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(paths["cert"], certificate["certificatePem"].encode(), mode=0o644)
    _write(paths["key"], certificate["keyPair"]["PrivateKey"].encode(), mode=0o600)
    _write(paths["ca"], ca_pem, mode=0o644)
    device_dir = Path(request.device_dir) if request.device_dir else out_dir.resolve()
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


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` atomically; the private key is never readable by others, not even briefly."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an old tmp file may have had other permissions
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
