"""Gateway configuration: who the gateway is, where it publishes, where it buffers.

Also how a configuration file is read and its errors reported (`load_model_file`, `validated`),
for this file and the other device-side files (replay mappings, simulated
gateways).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from edgeloop.schemas import names
from edgeloop.schemas.common import validation_problems
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.device import DeviceAnnouncement, DeviceIdentity
from edgeloop.schemas.model import Precision

from .buffer import MIN_MAX_BYTES, SampleBuffer
from .flush_policy import FlushPolicy
from .sample_store import FsyncPolicy
from .transport import Mqtt5Transport

Validated = TypeVar("Validated")
Model = TypeVar("Model", bound=BaseModel)


def validated(path: Path, what: str, validate: Callable[[], Validated], root: str = "<config>") -> Validated:
    """validate(), or a ValueError naming the file, what it should be, and every problem in it."""
    try:
        return validate()
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid {what}: {validation_problems(exc, root=root)}") from None


def load_model_file(
    model: type[Model], path: str | Path, what: str, parse: Callable[[str], object], root: str = "<config>"
) -> Model:
    """The `model` a file holds: its text parsed by `parse` (which raises a ValueError saying why the
    text is not in its language), then validated. Every error names the file."""
    path = Path(path)
    text = path.read_text()
    try:
        document = parse(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return validated(path, what, lambda: model.model_validate(document), root)


def parse_json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}") from None


class GatewayConfig(DeviceIdentity):
    """One gateway. transport="mqtt" (default) talks MQTT5 with mutual TLS to broker_host:broker_port
    and needs the broker and certificate fields; transport="greengrass" goes through the nucleus (IPC).
    flush: when a partial batch is sent (default: full, or 60 s after its oldest sample arrived)."""

    transport: Literal["mqtt", "greengrass"] = "mqtt"
    broker_host: str | None = None
    broker_port: int | None = Field(default=None, ge=1, le=65535)
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None
    buffer_path: Path
    buffer_max_bytes: int | None = Field(default=None, ge=MIN_MAX_BYTES)
    fsync_policy: FsyncPolicy = "normal"
    flush: FlushPolicy = Field(default_factory=FlushPolicy)

    @model_validator(mode="after")
    def _mqtt_needs_broker(self) -> GatewayConfig:
        if self.transport == "mqtt":
            missing = [
                name
                for name in ("broker_host", "broker_port", "cert_path", "key_path", "ca_path")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"transport='mqtt' needs {', '.join(missing)}")
        return self

    @property
    def telemetry_topic(self) -> str:
        return names.telemetry_topic(self.thing_name)

    @classmethod
    def from_file(cls, path: str | Path) -> GatewayConfig:
        return load_model_file(cls, path, "gateway config", parse_json)

    def open_buffer(self) -> SampleBuffer:
        """This gateway's durable buffer (close it when done)."""
        return SampleBuffer(
            self.buffer_path,
            thing_name=self.thing_name,
            line_id=self.line_id,
            max_bytes=self.buffer_max_bytes,
            fsync_policy=self.fsync_policy,
        )

    def mqtt_transport(self) -> Mqtt5Transport:
        """An MQTT5 transport to this gateway's broker with its certificates (transport="mqtt" only)."""
        if self.transport != "mqtt":
            raise ValueError(f"transport={self.transport!r}: only a transport='mqtt' gateway has a broker")
        return Mqtt5Transport(
            self.broker_host, self.broker_port, self.cert_path, self.key_path, self.ca_path, client_id=self.thing_name
        )

    def announcement(
        self, supported_precisions: list[Precision], current_model_version: str | None = None
    ) -> DeviceAnnouncement:
        """What this gateway publishes on its announce topic, sent now."""
        return DeviceAnnouncement(
            **self.identity(),
            supported_precisions=supported_precisions,
            current_model_version=current_model_version,
            sent_at=datetime.now(UTC),
        )

    def to_file(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path
