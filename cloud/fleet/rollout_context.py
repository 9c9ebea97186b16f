"""What the rollout functions work with, opened from their settings: the tables, the delivery, the policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edgeloop.schemas import RolloutPolicy

from .delivery import ModelDelivery, delivery_from_settings
from .deployments import DeploymentTable
from .devices import DeviceTable
from .rollout_settings import RolloutSettings


@dataclass(frozen=True)
class RolloutContext:
    devices: DeviceTable
    deployments: DeploymentTable
    delivery: ModelDelivery
    policy: RolloutPolicy


@contextmanager
def rollout_context(settings: RolloutSettings) -> Iterator[RolloutContext]:
    """The tables, delivery and policy `settings` name; the delivery is closed on the way out."""
    delivery = delivery_from_settings(settings)
    try:
        yield RolloutContext(
            DeviceTable(settings.device_table), DeploymentTable(settings.deployment_table), delivery, settings.policy
        )
    finally:
        delivery.close()
