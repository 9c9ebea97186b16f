"""The IoT registry side of provisioning: policies, thing type, thing, groups, certificates, undo.

Every call's operation and parameter names follow botocore's iot service model (moto accepts more).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from edgeloop.schemas import iot_policies, names

from .request import ProvisioningError, ProvisioningRequest

POLICY_VERSIONS_MAX = 5  # AWS IoT keeps at most five versions of a policy


@dataclass
class Undo:
    """What this run created, to remove again if a later step fails."""

    thing_created: str | None = None
    certificate: dict | None = None
    attached_policies: list[str] = field(default_factory=list)
    thing_attached: bool = False
    policy_created: str | None = None


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def require_policies(iot: Any, policies: list[str]) -> None:
    missing = []
    for policy in policies:
        try:
            iot.get_policy(policyName=policy)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            missing.append(policy)
    if missing:
        raise ProvisioningError(
            f"IoT policies {missing} do not exist in this account and region: deploy the edgeloop CDK stack "
            "first (it defines them, see cdk/constructs/iot.py)"
        )


def describe_thing(iot: Any, thing_name: str) -> dict | None:
    try:
        return iot.describe_thing(thingName=thing_name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def ensure_thing_type(iot: Any) -> None:
    try:
        iot.describe_thing_type(thingTypeName=names.GATEWAY_THING_TYPE)
        return
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
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
        if error_code(exc) != "ResourceAlreadyExistsException":  # created concurrently: fine
            raise


def put_thing(iot: Any, request: ProvisioningRequest, existing: dict | None, undo: Undo) -> str:
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


def put_thing_policy(iot: Any, thing_name: str, thing_arn: str, undo: Undo) -> str:
    """Create the core device's own policy, or make its current document the default version."""
    policy = iot_policies.thing_policy_name(thing_name)
    wanted = iot_policies.greengrass_thing_policy(iot_policies.IotArns.from_arn(thing_arn), thing_name)
    try:
        current = iot.get_policy(policyName=policy)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        iot.create_policy(policyName=policy, policyDocument=json.dumps(wanted))
        undo.policy_created = policy
        return policy
    if json.loads(current["policyDocument"]) != wanted:
        versions = iot.list_policy_versions(policyName=policy)["policyVersions"]
        if len(versions) >= POLICY_VERSIONS_MAX:
            oldest = min((v for v in versions if not v["isDefaultVersion"]), key=lambda v: int(v["versionId"]))
            iot.delete_policy_version(policyName=policy, policyVersionId=oldest["versionId"])
        iot.create_policy_version(policyName=policy, policyDocument=json.dumps(wanted), setAsDefault=True)
    return policy


def certificates_of(iot: Any, thing_name: str) -> list[str]:
    principals = iot.list_thing_principals(thingName=thing_name)["principals"]
    return [p for p in principals if ":cert/" in p]


def join_groups(iot: Any, request: ProvisioningRequest) -> None:
    wanted = {
        names.site_thing_group(request.site): f"edgeloop gateways of site {request.site}",
        names.line_thing_group(request.line_id): f"edgeloop gateways of line {request.line_id}",
    }
    attributes = {
        names.site_thing_group(request.site): {"site": request.site},
        names.line_thing_group(request.line_id): {"line_id": request.line_id},
    }
    for group, description in wanted.items():
        ensure_group(iot, group, description, attributes.get(group, {}))
    # The fleet group is the stack's (require_fleet_group checked it): creating it here would make a
    # later `cdk deploy` fail with AlreadyExists.
    fleet = [names.GREENGRASS_GATEWAYS_THING_GROUP] if request.greengrass else []
    for group in [*wanted, *fleet]:
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=request.thing_name)
    # a re-provisioned gateway that moved leaves its old site and line groups
    prefixes = (names.site_thing_group(""), names.line_thing_group(""))
    for group in iot.list_thing_groups_for_thing(thingName=request.thing_name)["thingGroups"]:
        name = group["groupName"]
        if name.startswith(prefixes) and name not in wanted:
            iot.remove_thing_from_thing_group(thingGroupName=name, thingName=request.thing_name)


def require_fleet_group(iot: Any) -> None:
    """The Greengrass gateways' thing group, which the stack creates with its base deployment."""
    group = names.GREENGRASS_GATEWAYS_THING_GROUP
    try:
        iot.describe_thing_group(thingGroupName=group)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise ProvisioningError(
            f"thing group {group!r} does not exist: deploy or update the edgeloop stack first (it creates the "
            "group and the base deployment that installs the edgeloop components on its members)"
        ) from exc


def ensure_group(iot: Any, group: str, description: str, attributes: dict[str, str]) -> None:
    try:
        iot.describe_thing_group(thingGroupName=group)
        return
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    properties: dict[str, Any] = {"thingGroupDescription": description}
    if attributes:
        properties["attributePayload"] = {"attributes": attributes}
    try:
        iot.create_thing_group(thingGroupName=group, thingGroupProperties=properties)
    except ClientError as exc:
        if error_code(exc) != "ResourceAlreadyExistsException":
            raise


def retire_certificate(iot: Any, thing_name: str, certificate_arn: str) -> str:
    """Detach an old certificate from the thing and its policies and deactivate it (kept for audit)."""
    iot.detach_thing_principal(thingName=thing_name, principal=certificate_arn)
    for policy in iot.list_attached_policies(target=certificate_arn)["policies"]:
        iot.detach_policy(policyName=policy["policyName"], target=certificate_arn)
    certificate_id = certificate_arn.rsplit("/", 1)[1]
    iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    return certificate_arn


def roll_back(iot: Any, thing_name: str, undo: Undo) -> None:
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
    if undo.policy_created:
        steps.append(lambda: iot.delete_policy(policyName=undo.policy_created))
    if undo.thing_created:
        steps.append(lambda: iot.delete_thing(thingName=undo.thing_created))
    for step in steps:
        try:
            step()
        except ClientError:
            pass
