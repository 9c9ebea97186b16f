"""Gateways in the local IoT registry (moto), as `edgeloop gateway provision` leaves them in AWS.

Ingest and context check every message's line against the registry
(cloud/line_directory.py), so the embedded runtime registers each gateway it runs: the thing of type
names.GATEWAY_THING_TYPE with the context attributes and the site and line thing groups, built
from the same ProvisioningRequest provisioning uses. Certificates are left out: the runtime's own
CA issues them for mosquitto.
"""

from __future__ import annotations

from typing import Any

from edgeloop.cloud.aws import client
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.provisioning import ProvisioningRequest, register_thing


def provisioning_request(gateway: GatewayConfig) -> ProvisioningRequest:
    """The request `edgeloop gateway provision` would get for this gateway (its registry part)."""
    return ProvisioningRequest.build(**gateway.identity())


def register_gateway(gateway: GatewayConfig, *, iot: Any = None) -> str:
    """Create (or update) the gateway's thing and group memberships; returns the thing ARN. Idempotent."""
    # Provisioning's own registry steps, so the local registry cannot drift from the AWS one.
    return register_thing(provisioning_request(gateway), iot=iot if iot is not None else client("iot"))
