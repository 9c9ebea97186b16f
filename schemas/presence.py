"""Device liveness from AWS IoT lifecycle events, and the connection state the registry keeps.

AWS IoT publishes a document on `$aws/events/presence/connected/<clientId>` and
`.../disconnected/<clientId>` whenever an MQTT client connects or disconnects (AWS IoT Core
developer guide, "Lifecycle events"). Those messages may arrive out of order or twice, so each
carries what orders them: the session (`sessionIdentifier`), a per-client-id `versionNumber` and
the broker's `timestamp`. `DeviceConnection.after` decides whether an event is newer than the
state already kept.

Client ids and things: a Greengrass nucleus connects as `<thing>` and opens further connections
as `<thing>#2`, `<thing>#3`... (its MqttClient names them so); AWS sends no lifecycle events for
client ids containing `#` or `+`, but `thing_name` maps either form back to the thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import Contract, UtcDatetime
from .compat import UTC

CONNECTED = "connected"
DISCONNECTED = "disconnected"
CLIENT_ID_SUFFIX_SEPARATOR = "#"  # the nucleus's extra connections: <thing>#<n>


class LifecycleEvent(BaseModel):
    """A connect/disconnect event as AWS IoT publishes it (fields AWS may add are ignored)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # AWS IoT Core refuses client ids over 128 bytes; the other strings are bounded by the payload's
    # limits (schemas/bounded_json.py MAX_LIFECYCLE_JSON).
    client_id: str = Field(alias="clientId", min_length=1, max_length=128)
    timestamp: int = Field(ge=0, description="when the broker saw it, ms since the Unix epoch")
    event_type: Literal["connected", "disconnected"] = Field(alias="eventType")
    session_identifier: str = Field(default="", alias="sessionIdentifier")
    principal_identifier: str = Field(default="", alias="principalIdentifier")
    version_number: int = Field(default=0, ge=0, alias="versionNumber")
    disconnect_reason: str = Field(default="", alias="disconnectReason")
    client_initiated_disconnect: bool | None = Field(default=None, alias="clientInitiatedDisconnect")
    ip_address: str | None = Field(default=None, alias="ipAddress")
    thing_name_field: str | None = Field(default=None, alias="thingName")  # exclusive-thing connections only

    @property
    def connected(self) -> bool:
        return self.event_type == CONNECTED

    @property
    def thing_name(self) -> str:
        """The thing this client id belongs to: `thingName` when AWS sends it, else the client id
        without the nucleus's `#<n>` suffix."""
        if self.thing_name_field:
            return self.thing_name_field
        return self.client_id.split(CLIENT_ID_SUFFIX_SEPARATOR, 1)[0]

    def connection(self) -> DeviceConnection:
        return DeviceConnection(
            connected=self.connected,
            client_id=self.client_id,
            session_identifier=self.session_identifier,
            version_number=self.version_number,
            at=datetime.fromtimestamp(self.timestamp / 1000, tz=UTC),
            disconnect_reason=self.disconnect_reason,
        )


class DeviceConnection(Contract):
    """The newest lifecycle event the registry applied to a device: is it connected, since when."""

    connected: bool
    client_id: str
    session_identifier: str = ""
    version_number: int = Field(default=0, ge=0)
    at: UtcDatetime
    disconnect_reason: str = ""

    def superseded_by(self, event: DeviceConnection) -> bool:
        """True when `event` is newer than this state.

        Same session: a disconnect ends it, so it wins over its connect, never the reverse (a
        duplicate or late connect of a closed session changes nothing). A disconnect of another
        session than the connected one belongs to an older session (one client id holds one
        session at a time): when a client reconnects with the same id, AWS closes the old session
        and its disconnect may come after the new connect. Otherwise the higher versionNumber wins,
        then the later timestamp.
        """
        if event.session_identifier and event.session_identifier == self.session_identifier:
            return self.connected and not event.connected
        if self.connected and not event.connected and self.session_identifier and event.session_identifier:
            return False
        if event.version_number != self.version_number:
            return event.version_number > self.version_number
        return event.at > self.at
