"""What a Greengrass core device needs from the account beyond the thing: the token exchange role
alias (the stack's output, or given), and the IoT data and credentials endpoints."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .registry import error_code
from .request import ROLE_ALIAS_OUTPUT, ProvisioningError, ProvisioningRequest

ENDPOINT_TYPES = ("iot:Data-ATS", "iot:CredentialProvider")


def endpoints(iot: Any) -> dict[str, str]:
    return {kind: iot.describe_endpoint(endpointType=kind)["endpointAddress"] for kind in ENDPOINT_TYPES}


def stack_output(cloudformation: Any, stack_name: str, key: str) -> str:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise ProvisioningError(
            f"cannot read stack {stack_name!r} ({error_code(exc)}): deploy the edgeloop CDK stack first, pass "
            "--stack with its name, or pass --role-alias"
        ) from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if key not in outputs:
        raise ProvisioningError(f"stack {stack_name!r} has no output {key!r}: is it the edgeloop stack?")
    return outputs[key]


def role_alias(request: ProvisioningRequest, iot: Any, cloudformation: Any) -> str:
    """The token exchange role alias the nucleus config names; checked to exist."""
    alias = request.role_alias or stack_output(cloudformation, request.stack_name, ROLE_ALIAS_OUTPUT)
    try:
        iot.describe_role_alias(roleAlias=alias)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise ProvisioningError(f"IoT role alias {alias!r} does not exist in this account and region") from None
    return alias
