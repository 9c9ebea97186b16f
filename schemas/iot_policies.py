"""The AWS IoT policy documents of edgeloop gateways, defined once for the CDK stack and provisioning.

Three documents:
- `device_data_policy`: plain device shims (MQTT client id = thing name). One shared policy in the
  stack, confined to the caller's own thing by `${iot:Connection.Thing.ThingName}` and
  `iot:Connection.Thing.IsAttached`, which work for such devices.
- `greengrass_fleet_policy`: what every Greengrass core device may do that names no thing: the
  Greengrass data-plane calls and the token-exchange role alias. One shared policy in the stack.
- `greengrass_thing_policy`: what one core device may do on MQTT, naming its thing literally.
  Provisioning creates one per core device (`thing_policy_name`) and attaches it to its certificate.

Why per-thing policies for core devices: the Greengrass v2 developer guide, "Device authentication
and authorization" (device-auth.html, "AWS IoT policies for data plane operations"), says thing
policy variables (`iot:Connection.Thing.*`, so also `IsAttached`) are not supported in AWS IoT
policies for core devices or Greengrass data-plane operations: those are HTTP calls, and the thing
variables come from the MQTT client id, which for a core device is not always the thing name (the
nucleus opens connections `<thing>`, `<thing>#2`, ... and `<thing>#endpoint-switch`: nucleus
MqttClient.getNewMqttClient, StandaloneMqttConnector). AWS's own answer is a wildcard on the thing
name ("Minimal AWS IoT policy for AWS IoT Greengrass V2 core devices": `client/<thing>*`,
`$aws/things/<thing>*/...`); a shared policy with a wildcard could not keep gateway A off gateway B's
edgeloop/<B>/* topics, a policy naming A can. We also narrow `<thing>*` to `<thing>` plus
`<thing>#*`, so gateway `gw-1` cannot take over the session of `gw-10` by connecting as it.

The MQTT resources follow that minimal policy: health telemetry topics, jobs and shadow topics of the
thing, the thing's shadow (HTTP), plus the device's edgeloop topics. The data-plane actions take
`Resource: "*"` as in the minimal policy (the guide gives no narrower resource for them that the IoT
policy engine evaluates); they resolve and download components and deployment documents, they do not
reach another gateway's topics. Client-device actions (PutCertificateAuthorities,
VerifyClientDeviceIdentity, ...) are left out: edgeloop deploys no client-device auth component.

Plain dicts, no AWS or CDK import, Python 3.9 syntax: the CDK construct (cdk/constructs/iot.py) and
provisioning (edgeloop/provisioning) both call these.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import names

THING_NAME_VARIABLE = "${iot:Connection.Thing.ThingName}"
POLICY_VERSION = "2012-10-17"
# "Minimal AWS IoT policy for AWS IoT Greengrass V2 core devices" (nucleus >= 2.5.0).
GREENGRASS_DATA_PLANE_ACTIONS = (
    "greengrass:GetComponentVersionArtifact",
    "greengrass:ResolveComponentCandidates",
    "greengrass:GetDeploymentConfiguration",
    "greengrass:ListThingGroupsForCoreDevice",
)
# Suffix the nucleus appends to the thing name for its extra MQTT connections (`<thing>#2`, ...).
CLIENT_ID_SUFFIX_SEPARATOR = "#"
THING_POLICY_PREFIX = f"{names.PROJECT}-thing-"
POLICY_NAME_MAX = 128  # AWS IoT policy names: [\w+=,.@-]+, at most 128 characters


@dataclass(frozen=True)
class IotArns:
    """Builds `arn:<partition>:iot:<region>:<account>:<resource>` (literals, or CDK tokens)."""

    partition: str
    region: str
    account: str

    @classmethod
    def from_arn(cls, arn: str) -> IotArns:
        """From any IoT ARN of the account and region, e.g. a thing's or a role alias's."""
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iot":
            raise ValueError(f"{arn!r} is not an AWS IoT ARN")
        return cls(partition=parts[1], region=parts[3], account=parts[4])

    def __call__(self, resource: str) -> str:
        return f"arn:{self.partition}:iot:{self.region}:{self.account}:{resource}"


def document(*statements: dict) -> dict:
    return {"Version": POLICY_VERSION, "Statement": [{"Effect": "Allow", **s} for s in statements]}


def own_topic_statements(arns: IotArns, thing: str) -> list[dict]:
    """Publish, receive and subscribe on edgeloop/<thing>/* and nothing else of edgeloop's."""
    own_topics = f"{names.TOPIC_ROOT}/{thing}/*"
    return [
        {"Action": ["iot:Publish", "iot:Receive"], "Resource": arns(f"topic/{own_topics}")},
        {"Action": "iot:Subscribe", "Resource": arns(f"topicfilter/{own_topics}")},
    ]


def device_data_policy(arns: IotArns) -> dict:
    """Plain device shims: connect only as their own thing (client id = thing name), own topics only."""
    return document(
        {
            "Action": "iot:Connect",
            "Resource": arns(f"client/{THING_NAME_VARIABLE}"),
            # The certificate must be attached to the thing it claims to be.
            "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
        },
        *own_topic_statements(arns, THING_NAME_VARIABLE),
    )


def greengrass_fleet_policy(role_alias_arn: str) -> dict:
    """Every core device: the Greengrass data-plane calls and the token exchange; no thing named."""
    return document(
        {"Action": "iot:AssumeRoleWithCertificate", "Resource": role_alias_arn},
        {"Action": list(GREENGRASS_DATA_PLANE_ACTIONS), "Resource": "*"},
    )


def greengrass_thing_policy(arns: IotArns, thing_name: str) -> dict:
    """One core device's MQTT permissions, its thing named literally (never a policy variable)."""
    if "$" in thing_name or "*" in thing_name:
        raise ValueError(f"thing name {thing_name!r} must be literal, not a variable or wildcard")
    things = f"$aws/things/{thing_name}"
    reserved_topics = [
        f"{things}/greengrass/health/json",
        f"{things}/greengrassv2/health/json",
        f"{things}/jobs/*",
        f"{things}/shadow/*",
    ]
    reserved_filters = [f"{things}/jobs/*", f"{things}/shadow/*"]
    client_ids = [thing_name, f"{thing_name}{CLIENT_ID_SUFFIX_SEPARATOR}*"]
    return document(
        {"Action": "iot:Connect", "Resource": [arns(f"client/{c}") for c in client_ids]},
        {"Action": ["iot:Publish", "iot:Receive"], "Resource": [arns(f"topic/{t}") for t in reserved_topics]},
        {"Action": "iot:Subscribe", "Resource": [arns(f"topicfilter/{t}") for t in reserved_filters]},
        {
            "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"],
            "Resource": arns(f"thing/{thing_name}"),
        },
        *own_topic_statements(arns, thing_name),
    )


def thing_policy_name(thing_name: str) -> str:
    """Name of a core device's own policy; refuses names AWS IoT would refuse."""
    name = f"{THING_POLICY_PREFIX}{thing_name}"
    if ":" in thing_name or len(name) > POLICY_NAME_MAX:
        raise ValueError(
            f"thing name {thing_name!r} cannot name a Greengrass core device's policy: no ':' (Greengrass "
            f"refuses it) and at most {POLICY_NAME_MAX - len(THING_POLICY_PREFIX)} characters"
        )
    return name
