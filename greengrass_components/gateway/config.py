"""Gateway configuration: who the gateway is, where it publishes, where it buffers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier, SemVer, ThingName
from edgeloop.schemas.model import Architecture

from .buffer import MIN_MAX_BYTES, FsyncPolicy


class GatewayConfig(BaseModel):
    """One gateway. transport="mqtt" (default) talks MQTT5 with mutual TLS to broker_host:broker_port
    and needs the broker and certificate fields; transport="greengrass" goes through the nucleus (IPC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thing_name: ThingName
    site: Identifier
    line_id: Identifier
    use_case: Identifier
    architecture: Architecture
    runtime_version: SemVer
    transport: Literal["mqtt", "greengrass"] = "mqtt"
    broker_host: str | None = None
    broker_port: int | None = Field(default=None, ge=1, le=65535)
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None
    buffer_path: Path
    buffer_max_bytes: int | None = Field(default=None, ge=MIN_MAX_BYTES)
    fsync_policy: FsyncPolicy = "normal"

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
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<config>'}={err.get('input')!r}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"{path}: invalid gateway config: {problems}") from None

    def to_file(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path
