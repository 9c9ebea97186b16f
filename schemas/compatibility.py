"""Which payload tier a device can run: the one rule the planner, the rollback and the device agent apply.

A tier (a CompatibilityTier of a manifest, or the ModelUpdate a wave delivers) lists the
architectures it runs on, the minimum runtime version and its precision; a device has an
architecture, a runtime version and the precisions it supports. `incompatibility` checks them in
that order and returns the first mismatch, or None when the device can run the tier. A requirement
or a device fact that is not known (None: an update document older than the field, an agent not
told its runtime version) is not checked.

The planner and the fleet queries give `str(incompatibility)` as the reason; the device agent
refuses an update with `incompatibility.refusal()`, which also says what the device is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .common import semver_key
from .compat import StrEnum
from .model import Architecture, Precision

# Most precise first: a device gets the first tier it can run, a rollback restores the first it can.
PRECISION_ORDER: tuple[Precision, ...] = tuple(Precision)


class TierRequirements(Protocol):
    """What a payload tier asks of a device (CompatibilityTier and ModelUpdate both carry it)."""

    @property
    def precision(self) -> Precision: ...

    @property
    def architectures(self) -> Sequence[Architecture] | None: ...

    @property
    def min_runtime_version(self) -> str | None: ...


class DeviceCapabilities(Protocol):
    """What a device can run (DeviceRecord carries it; the agent knows its own architecture and runtime)."""

    @property
    def architecture(self) -> Architecture | None: ...

    @property
    def runtime_version(self) -> str | None: ...

    @property
    def supported_precisions(self) -> Sequence[Precision] | None: ...


@dataclass(frozen=True)
class KnownCapabilities:
    """A device's capabilities as far as they are known; None: not checked."""

    architecture: Architecture | None = None
    runtime_version: str | None = None
    supported_precisions: tuple[Precision, ...] | None = None


class Mismatch(StrEnum):
    """Which check failed, in the device agent's words."""

    ARCHITECTURE = "architecture mismatch"
    RUNTIME = "runtime too old"
    PRECISION = "precision not supported"


@dataclass(frozen=True)
class Incompatibility:
    """Why a device cannot run a tier: the failed check, the fleet's reason, and the device's own fact."""

    mismatch: Mismatch
    reason: str  # e.g. "architecture armv7l not in fp32 tier [x86_64, aarch64]"
    device_fact: str  # e.g. "device is armv7l"

    def __str__(self) -> str:
        return self.reason

    def refusal(self) -> str:
        """The device agent's reason for refusing the update."""
        return f"{self.mismatch.value}: {self.device_fact}; {self.reason}"


def incompatibility(tier: TierRequirements, device: DeviceCapabilities) -> Incompatibility | None:
    """The first check `device` fails for `tier` (architecture, runtime, precision), or None: it can run it."""
    precision = tier.precision.value
    architectures = tier.architectures
    if device.architecture is not None and architectures is not None and device.architecture not in architectures:
        allowed = ", ".join(a.value for a in architectures)
        return Incompatibility(
            Mismatch.ARCHITECTURE,
            f"architecture {device.architecture.value} not in {precision} tier [{allowed}]",
            f"device is {device.architecture.value}",
        )
    minimum, runtime = tier.min_runtime_version, device.runtime_version
    if minimum is not None and runtime is not None and semver_key(runtime) < semver_key(minimum):
        return Incompatibility(
            Mismatch.RUNTIME,
            f"runtime {runtime} < {minimum} of {precision} tier",
            f"device runtime_version={runtime}",
        )
    supported = device.supported_precisions
    if supported is not None and tier.precision not in supported:
        listed = ", ".join(p.value for p in supported)
        return Incompatibility(
            Mismatch.PRECISION,
            f"precision {precision} not in supported precisions [{listed}]",
            f"device supports [{listed}]",
        )
    return None


Tier = TypeVar("Tier", bound=TierRequirements)


def most_precise_first(tiers: Iterable[Tier]) -> list[Tier]:
    """`tiers` in PRECISION_ORDER."""
    return sorted(tiers, key=lambda tier: PRECISION_ORDER.index(tier.precision))


def best_tier(tiers: Iterable[Tier], device: DeviceCapabilities) -> tuple[Tier | None, list[Incompatibility]]:
    """The most precise of `tiers` the device can run, or None and why not (one incompatibility per tier)."""
    problems = []
    for tier in most_precise_first(tiers):
        problem = incompatibility(tier, device)
        if problem is None:
            return tier, problems
        problems.append(problem)
    return None, problems
