"""What a provisioning run is asked to do (ProvisioningRequest) and what it did (ProvisionedGateway)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeloop.schemas import iot_policies, names
from edgeloop.schemas.common import Identifier, SemVer, ThingName, validation_problems
from edgeloop.schemas.model import Architecture

MQTT_TLS_PORT = 8883
CONFIG_FILE = "gateway.json"
NUCLEUS_CONFIG_FILE = "config.yaml"  # the installer's --init-config
INSTALL_SCRIPT = "install-greengrass.sh"
CERT_FILE = "certificate.pem.crt"
KEY_FILE = "private.pem.key"
CA_FILE = "AmazonRootCA1.pem"
BUFFER_FILE = "buffer.db"
AMAZON_ROOT_CA = "Amazon Root CA 1"  # signs IoT Core's ATS data endpoints
# The Greengrass nucleus a new core device installs: the installer zip of exactly this version
# (https://d2s8p88vqu9w66.cloudfront.net/releases/greengrass-<version>.zip) must match the version in
# the nucleus config ("Install AWS IoT Greengrass Core software with manual resource provisioning").
# The recipes need >= 2.6.0 (interpolateComponentConfiguration).
NUCLEUS_VERSION = "2.16.1"
GREENGRASS_ROOT = Path("/greengrass/v2")
# The CDK stack's name (cdk/app.py STACK_NAME) and the output naming the token exchange role alias
# (cdk/stack.py _outputs).
STACK_NAME = "Edgeloop"
ROLE_ALIAS_OUTPUT = "GatewayRoleAlias"


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
    greengrass: bool = Field(default=False, description="a Greengrass core device: core policies, nucleus config")
    greengrass_root: Path = Field(default=GREENGRASS_ROOT, description="the nucleus root folder on the gateway")
    nucleus_version: SemVer = NUCLEUS_VERSION
    stack_name: str = Field(default=STACK_NAME, min_length=1, description="where the role alias output is read")
    role_alias: str | None = Field(default=None, description=f"default: the stack's {ROLE_ALIAS_OUTPUT} output")
    ca_file: Path | None = Field(default=None, description=f"CA of the IoT endpoint (default: {AMAZON_ROOT_CA})")
    force: bool = False

    @model_validator(mode="after")
    def _core_device_names(self) -> ProvisioningRequest:
        if self.greengrass:
            iot_policies.thing_policy_name(self.thing_name)  # raises on a name AWS would refuse
            if not self.greengrass_root.is_absolute():
                raise ValueError(f"greengrass_root={str(self.greengrass_root)!r} must be an absolute path")
        return self

    @classmethod
    def build(cls, **fields: Any) -> ProvisioningRequest:
        """Like the constructor, with every problem as field=value: message in one ValueError."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise ValueError(f"invalid provisioning request: {problems}") from None

    @property
    def stack_policies(self) -> list[str]:
        """The shared policies the CDK stack defines that this gateway's certificate gets."""
        return [names.GREENGRASS_CORE_POLICY if self.greengrass else names.GATEWAY_DATA_POLICY]

    @property
    def thing_policy(self) -> str | None:
        """A core device's own policy, created by provisioning (schemas/iot_policies.py says why)."""
        return iot_policies.thing_policy_name(self.thing_name) if self.greengrass else None

    @property
    def policies(self) -> list[str]:
        return [*self.stack_policies, *([self.thing_policy] if self.thing_policy else [])]

    @property
    def thing_groups(self) -> list[str]:
        groups = [names.site_thing_group(self.site), names.line_thing_group(self.line_id)]
        return [*groups, *([names.GREENGRASS_GATEWAYS_THING_GROUP] if self.greengrass else [])]

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
    config_path: Path  # gateway.json, or the nucleus config.yaml of a Greengrass core device
    cert_path: Path
    key_path: Path
    ca_path: Path
    endpoint: str
    retired_certificates: list[str] = field(default_factory=list)
    role_alias: str | None = None
    install_commands: list[str] = field(default_factory=list)  # Greengrass: what to run on the gateway
