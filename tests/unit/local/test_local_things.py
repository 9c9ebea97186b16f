"""The local runtime registers its gateways in (moto's) IoT registry the way provisioning does."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from edgeloop.cloud.line_directory import IotLineDirectory
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.local.things import provisioning_request, register_gateway
from edgeloop.schemas import names


@pytest.fixture()
def iot():
    with mock_aws():
        yield boto3.client("iot")


def gateway(line_id: str = "line-1", **changes) -> GatewayConfig:
    fields = dict(
        thing_name="line-1-gw",
        site="plant-a",
        line_id=line_id,
        use_case="extrusion",
        architecture="aarch64",
        runtime_version="1.2.0",
        transport="greengrass",
        buffer_path=Path("/tmp/unused.sqlite"),
    )
    return GatewayConfig(**{**fields, **changes})


def groups_of(iot, thing: str) -> set[str]:
    return {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]}


def test_gateway_thing_carries_the_provisioning_attributes_type_and_groups(iot):
    arn = register_gateway(gateway())

    thing = iot.describe_thing(thingName="line-1-gw")
    assert thing["thingArn"] == arn and thing["thingTypeName"] == names.GATEWAY_THING_TYPE
    assert thing["attributes"] == {
        "site": "plant-a",
        "line_id": "line-1",
        "use_case": "extrusion",
        "architecture": "aarch64",
        "runtime_version": "1.2.0",
    }
    assert set(thing["attributes"]) == set(names.GATEWAY_THING_ATTRIBUTES)
    assert groups_of(iot, "line-1-gw") == {names.site_thing_group("plant-a"), names.line_thing_group("line-1")}
    assert thing["attributes"] == provisioning_request(gateway()).attributes


def test_registering_again_is_idempotent_and_follows_a_moved_gateway(iot):
    register_gateway(gateway())
    register_gateway(gateway())
    register_gateway(gateway(line_id="line-2"))

    assert iot.describe_thing(thingName="line-1-gw")["attributes"]["line_id"] == "line-2"
    assert groups_of(iot, "line-1-gw") == {names.site_thing_group("plant-a"), names.line_thing_group("line-2")}
    assert len(iot.list_things()["things"]) == 1


def test_ingest_finds_the_line_of_a_registered_gateway(iot):
    assert names.GATEWAY_LINE_ATTRIBUTE in names.GATEWAY_THING_ATTRIBUTES
    register_gateway(gateway(line_id="line-7"))
    assert IotLineDirectory().line_of("line-1-gw") == "line-7"
