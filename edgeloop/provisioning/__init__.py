"""Provision a gateway in AWS IoT: thing with its context, certificate, policies, thing groups, config.

`edgeloop gateway provision NAME --site S --line L --arch A [--greengrass]` calls `provision_gateway`,
against whatever endpoint boto3 is configured for (AWS, or moto in tests). In order:
1. check that the shared policies the CDK stack defines exist (nothing is created otherwise) and,
   for a Greengrass core device, find the token exchange role alias (the stack's GatewayRoleAlias
   output, or --role-alias);
2. create the thing (type names.GATEWAY_THING_TYPE, created if missing) with its context attributes
   names.GATEWAY_THING_ATTRIBUTES;
3. for a core device, create its own IoT policy naming the thing literally (schemas/iot_policies.py
   says why: thing policy variables are not supported for core devices);
4. create a key pair and an active certificate, attach the policies to it and it to the thing;
5. add the thing to its site and line thing groups, and a core device to
   names.GREENGRASS_GATEWAYS_THING_GROUP, the base deployment's target (the stack creates it);
6. write certificate, key, Amazon Root CA 1 and either the gateway's connection config (GatewayConfig
   JSON) or the nucleus config.yaml plus install-greengrass.sh (the installer commands).
A failure after step 2 undoes what this run created. An existing thing is refused unless `force`:
then its attributes are updated, it moves to its new groups, and its old certificates are detached
and deactivated (kept for audit, no longer usable) once the new one is in place.

Pass `iot=` / `cloudformation=` clients, or a `session=` (boto3.Session) to build them from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import files, greengrass, registry
from .files import SYSTEM_CA_FILES
from .request import (
    AMAZON_ROOT_CA,
    CA_FILE,
    CERT_FILE,
    CONFIG_FILE,
    KEY_FILE,
    NUCLEUS_CONFIG_FILE,
    NUCLEUS_VERSION,
    STACK_NAME,
    ProvisionedGateway,
    ProvisioningError,
    ProvisioningRequest,
    default_runtime_version,
)

__all__ = [
    "AMAZON_ROOT_CA",
    "CA_FILE",
    "CERT_FILE",
    "CONFIG_FILE",
    "KEY_FILE",
    "NUCLEUS_CONFIG_FILE",
    "NUCLEUS_VERSION",
    "STACK_NAME",
    "SYSTEM_CA_FILES",
    "ProvisionedGateway",
    "ProvisioningError",
    "ProvisioningRequest",
    "default_runtime_version",
    "provision_gateway",
    "register_thing",
]


def register_thing(request: ProvisioningRequest, *, iot: Any) -> str:
    """Only the registry part of provisioning (thing type, thing with its context attributes, site
    and line groups), without certificates; idempotent, so a rerun completes a failed one.
    Returns the thing ARN. The local runtime registers its gateways with it."""
    registry.ensure_thing_type(iot)
    arn = registry.put_thing(iot, request, registry.describe_thing(iot, request.thing_name), registry.Undo())
    registry.join_groups(iot, request)
    return arn


def _clients(iot: Any, cloudformation: Any, session: Any, greengrass_device: bool) -> tuple[Any, Any]:
    def make(service: str) -> Any:
        if session is not None:
            return session.client(service)
        from edgeloop.cloud.aws import client

        return client(service)

    iot = iot if iot is not None else make("iot")
    if greengrass_device and cloudformation is None:
        cloudformation = make("cloudformation")
    return iot, cloudformation


def _check(request: ProvisioningRequest, iot: Any) -> dict | None:
    """Everything that can refuse the run before anything is created; returns the existing thing."""
    existing = registry.describe_thing(iot, request.thing_name)
    if existing is not None and not request.force:
        raise ProvisioningError(
            f"thing {request.thing_name!r} already exists ({existing['thingArn']}): pass --force to re-provision it "
            "(its attributes and groups are updated, a new certificate is issued and its current certificates "
            "are detached and deactivated)"
        )
    if not request.force:
        files.refuse_existing_files(files.output_paths(request))
    return existing


def provision_gateway(
    request: ProvisioningRequest, *, iot: Any = None, cloudformation: Any = None, session: Any = None
) -> ProvisionedGateway:
    iot, cloudformation = _clients(iot, cloudformation, session, request.greengrass)
    registry.require_policies(iot, request.stack_policies)
    alias = greengrass.role_alias(request, iot, cloudformation) if request.greengrass else None
    if request.greengrass:
        registry.require_fleet_group(iot)
    ca_pem = files.ca_pem(request.ca_file)
    existing = _check(request, iot)
    endpoints = greengrass.endpoints(iot) if request.greengrass else {}
    endpoint = endpoints.get("iot:Data-ATS") or iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    registry.ensure_thing_type(iot)
    undo = registry.Undo()
    paths = files.output_paths(request)
    try:
        thing_arn = registry.put_thing(iot, request, existing, undo)
        old_certificates = registry.certificates_of(iot, request.thing_name) if existing else []
        if request.greengrass:
            registry.put_thing_policy(iot, request.thing_name, thing_arn, undo)
        certificate = iot.create_keys_and_certificate(setAsActive=True)
        undo.certificate = certificate
        for policy in request.policies:
            iot.attach_policy(policyName=policy, target=certificate["certificateArn"])
            undo.attached_policies.append(policy)
        iot.attach_thing_principal(thingName=request.thing_name, principal=certificate["certificateArn"])
        undo.thing_attached = True
        registry.join_groups(iot, request)
        files.write_credentials(paths, certificate, ca_pem)
        config_path = _write_config(request, paths, iot, alias, endpoints, endpoint)
    except Exception:
        registry.roll_back(iot, request.thing_name, undo)
        raise
    retired = [registry.retire_certificate(iot, request.thing_name, arn) for arn in old_certificates]
    return ProvisionedGateway(
        thing_name=request.thing_name,
        thing_arn=thing_arn,
        certificate_id=certificate["certificateId"],
        certificate_arn=certificate["certificateArn"],
        policies=request.policies,
        thing_groups=request.thing_groups,
        config_path=config_path,
        cert_path=paths["cert"],
        key_path=paths["key"],
        ca_path=paths["ca"],
        endpoint=endpoint,
        retired_certificates=retired,
        role_alias=alias,
        install_commands=files.install_commands(request) if request.greengrass else [],
    )


def _write_config(
    request: ProvisioningRequest,
    paths: dict[str, Path],
    iot: Any,
    alias: str | None,
    endpoints: dict[str, str],
    endpoint: str,
) -> Path:
    if not request.greengrass:
        return files.write_gateway_config(request, paths, endpoint)
    assert alias is not None  # role_alias() ran for every Greengrass request
    config = files.nucleus_config(request, region=iot.meta.region_name, role_alias=alias, endpoints=endpoints)
    return files.write_greengrass_files(request, paths, config)
