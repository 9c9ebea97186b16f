"""Gateways in the local IoT registry (moto), as `edgeloop gateway provision` leaves them in AWS.

Ingest checks every batch's line against the registry (functions/ingest/data_access.py
IotLineDirectory), so the embedded runtime registers each gateway it runs: the thing of type
names.GATEWAY_THING_TYPE with the context attributes and the site and line thing groups, built
from the same ProvisioningRequest provisioning uses. Certificates are left out: the runtime's own
CA issues them for mosquitto.
"""

from __future__ import annotations

from typing import Any

from edgeloop.functions.common.aws import client
from edgeloop.greengrass_components.gateway.config import GatewayConfig

# Provisioning's registry steps, reused so the local registry cannot drift from the AWS one.
from edgeloop.provisioning import (
    ProvisioningRequest,
    _describe_thing,
    _ensure_thing_type,
    _join_groups,
    _put_thing,
    _Undo,
)


def provisioning_request(gateway: GatewayConfig) -> ProvisioningRequest:
    """The request `edgeloop gateway provision` would get for this gateway (its registry part)."""
    return ProvisioningRequest.build(
        thing_name=gateway.thing_name,
        site=gateway.site,
        line_id=gateway.line_id,
        architecture=gateway.architecture,
        use_case=gateway.use_case,
        runtime_version=gateway.runtime_version,
    )


def register_gateway(gateway: GatewayConfig, *, iot: Any = None) -> str:
    """Create (or update) the gateway's thing and group memberships; returns the thing ARN. Idempotent."""
    iot = iot if iot is not None else client("iot")
    request = provisioning_request(gateway)
    _ensure_thing_type(iot)
    # No roll-back here (provisioning's undo list): every step is idempotent, a rerun completes it.
    arn = _put_thing(iot, request, _describe_thing(iot, request.thing_name), _Undo())
    _join_groups(iot, request)
    return arn
