"""Whether a model update may replace what the device runs: the rules signing.verify_signed_update
applies once the signatures hold, apart from the cryptography.

- RunningModel, VersionFloor: what the device runs (and ran before), and the highest version it
  accepted with what rollbacks did since (persisted across restarts).
- identity_problems, rollback_problems: whether a signed document (schemas/signed_model.py) names
  this update and this device.
- order_problem: why an update is out of order without a signed rollback (the downgrade rule);
  rollback_refusal: why a signed rollback does not apply to what the device runs.
- next_floor: the floor after an update was applied.

The checks return what is wrong as text instead of raising: verify_signed_update turns it into
SignatureRejected with the key it verified against, so this module needs neither key nor cryptography.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeloop.schemas.common import semver_key
from edgeloop.schemas.model import ModelUpdate
from edgeloop.schemas.signed_model import RollbackAuthorization, SignedModelIdentity


@dataclass(frozen=True)
class RunningModel:
    """What the device runs (and ran before it), as the downgrade rule needs it."""

    model_id: str
    version: str
    sha256: str
    deployment_id: str


@dataclass(frozen=True)
class VersionFloor:
    """The highest version this device accepted and what rollbacks did since: persisted, so a restart
    forgets none of it (the update agent keeps it in its state directory)."""

    version: str
    model_id: str
    deployment_id: str  # the deployment that delivered `version`
    rolled_back: bool = False  # `version` was rolled back: delivering it again is refused
    last_rollback_issued_at_ms: int = -1  # issued_at_ms of the last signed rollback accepted

    @classmethod
    def from_json(cls, value: object, *, where: str) -> VersionFloor:
        """Strictly typed from its JSON object; ValueError naming the field, its value and `where` otherwise."""
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {type(value).__name__} is not a JSON object")
        expected = {"version": str, "model_id": str, "deployment_id": str, "rolled_back": bool}
        unknown = sorted(set(value) - set(expected) - {"last_rollback_issued_at_ms"})
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}")
        for field, kind in expected.items():
            if not isinstance(value.get(field), kind):
                raise ValueError(f"{where}: {field}={value.get(field)!r} is not a {kind.__name__}")
        issued = value.get("last_rollback_issued_at_ms", -1)
        if isinstance(issued, bool) or not isinstance(issued, int):
            raise ValueError(f"{where}: last_rollback_issued_at_ms={issued!r} is not an integer")
        try:
            semver_key(value["version"])
        except ValueError:
            raise ValueError(f"{where}: version={value['version']!r} is not MAJOR.MINOR.PATCH") from None
        return cls(**value)


# --- do the signed documents name this update and this device? ------------------------------------


def identity_problems(
    document: SignedModelIdentity, update: ModelUpdate, digest: str, use_case: str, line_id: str | None
) -> list[str]:
    """Where a model version's signed identity differs from the update (its payload `digest`) or the device."""
    tier_digest = document.payload_sha256.get(update.precision.value)
    problems = [
        f"model_id {document.model_id!r} != update's {update.model_id!r}"
        if document.model_id != update.model_id
        else "",
        f"version {document.version} != update's {update.version}" if document.version != update.version else "",
        f"{update.precision.value} tier digest {tier_digest} != payload's {digest}" if tier_digest != digest else "",
        f"use case {document.use_case!r} is not this device's {use_case!r}" if document.use_case != use_case else "",
        f"lines {document.line_ids} do not include this device's line {line_id!r}"
        if line_id is not None and line_id not in document.line_ids
        else "",
    ]
    return [p for p in problems if p]


def rollback_problems(
    document: RollbackAuthorization, update: ModelUpdate, use_case: str, line_id: str | None
) -> list[str]:
    """Where a signed rollback differs from the update it travels with or from the device."""
    problems = [
        f"model_id {document.model_id!r} != update's {update.model_id!r}"
        if document.model_id != update.model_id
        else "",
        f"to_version {document.to_version} != update's version {update.version}"
        if document.to_version != update.version
        else "",
        f"rolls_back_deployment_id {document.rolls_back_deployment_id!r} != update's deployment_id "
        f"{update.deployment_id!r}"
        if document.rolls_back_deployment_id != update.deployment_id
        else "",
        f"use case {document.use_case!r} is not this device's {use_case!r}" if document.use_case != use_case else "",
        f"line {document.line_id!r} is not this device's line {line_id!r}"
        if line_id is not None and document.line_id != line_id
        else "",
    ]
    return [p for p in problems if p]


# --- the downgrade rule ---------------------------------------------------------------------------


def rollback_refusal(
    document: RollbackAuthorization, running: RunningModel | None, floor: VersionFloor | None
) -> str | None:
    """Why a downgrade's signed rollback does not apply (None: it does): it must roll back the
    deployment the device runs, and be newer than the last one the device accepted."""
    # The deployment the device runs (serving nothing after a failed restore: the one that brought its highest).
    runs = running.deployment_id if running is not None else (floor.deployment_id if floor is not None else None)
    if document.rolls_back_deployment_id != runs:
        return (
            f"signed rollback refused: rolls_back_deployment_id={document.rolls_back_deployment_id!r} is not the "
            f"deployment this device runs ({runs!r})"
        )
    if floor is not None and document.issued_at_ms <= floor.last_rollback_issued_at_ms:
        return (
            f"signed rollback refused: issued_at_ms={document.issued_at_ms} is not after the last rollback this "
            f"device accepted ({floor.last_rollback_issued_at_ms}): a replayed rollback"
        )
    return None


def order_problem(
    update: ModelUpdate,
    digest: str,
    running: RunningModel | None,
    previous: RunningModel | None,
    floor: VersionFloor | None,
) -> str | None:
    """Why `update` is out of order without a signed rollback (None: it is in order)."""
    version = semver_key(update.version)
    if floor is not None and floor.rolled_back and version == semver_key(floor.version):
        if running is not None and (running.model_id, running.version, running.sha256) == (
            update.model_id,
            update.version,
            digest,
        ):
            return None
        return (
            f"refused: {update.model_id} {update.version} was rolled back on this device (deployment "
            f"{floor.deployment_id}); only a newer version, or a signed rollback, is accepted"
        )
    known = [m.version for m in (running, floor) if m is not None]
    newest = max((semver_key(v) for v in known), default=version)
    if version >= newest:
        return None
    candidate = (update.model_id, update.version, digest)
    if (
        running is not None
        and previous is not None
        and update.deployment_id == running.deployment_id
        and candidate == (previous.model_id, previous.version, previous.sha256)
    ):
        return None  # the fleet's automatic restore of the model this device ran just before
    highest = floor.version if floor is not None else running.version
    runs = running.deployment_id if running is not None else None
    return (
        f"downgrade refused: {update.model_id} {update.version} is older than version {highest} this device "
        f"accepted and carries no signed rollback of deployment {runs!r} "
        f"(`edgeloop models rollback` issues one; update deployment_id={update.deployment_id!r})"
    )


def next_floor(floor: VersionFloor | None, update: ModelUpdate) -> VersionFloor:
    """The floor after `update` was applied (verify_signed_update passed): a newer version raises it; a
    rollback (signed, or the fleet's restore) keeps it and marks the version gone back from."""
    if floor is None or semver_key(update.version) > semver_key(floor.version):
        issued = floor.last_rollback_issued_at_ms if floor is not None else -1
        return VersionFloor(update.version, update.model_id, update.deployment_id, False, issued)
    if update.rollback is not None:
        document = update.rollback.document
        return replace(
            floor,
            rolled_back=floor.rolled_back or semver_key(document.rolls_back_version) >= semver_key(floor.version),
            last_rollback_issued_at_ms=max(floor.last_rollback_issued_at_ms, document.issued_at_ms),
        )
    if semver_key(update.version) < semver_key(floor.version):
        return replace(floor, rolled_back=True)
    return floor
