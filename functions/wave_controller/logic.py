"""One scheduled round: mark silent devices OFFLINE, then advance every unfinished rollout.

Status reports advance rollouts as they arrive, but a lost report, a device that never answers or
a crash between a rollout's failure and its rollback would leave it waiting forever; this round
(every minute) re-evaluates them with the clock, so timeouts fire and rollbacks complete. It reads
every device of each current wave (it never trusts the wave counters status intake relies on), so
a wave whose counts fell behind (a crash between a device's write and its count) is still decided.
One rollout's error does not stop the others: it is returned, and the next round tries again.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edgeloop.cloud.fleet.delivery import ModelDelivery
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.cloud.fleet.liveness import mark_silent_devices
from edgeloop.cloud.fleet.waves import advance
from edgeloop.schemas import DeploymentRecord, DeploymentState, RolloutPolicy

# FAILED rollouts with a failed wave still owe their rollback; ROLLED_BACK ones may owe a restore to a
# device that reported late. SUCCEEDED, TIMED_OUT and PLANNED ones need nothing from the clock.
_UNFINISHED = (DeploymentState.IN_PROGRESS, DeploymentState.FAILED)


class Round(BaseModel):
    model_config = ConfigDict(frozen=True)

    marked_offline: list[str] = Field(default_factory=list)
    advanced: dict[str, str] = Field(default_factory=dict)  # deployment id -> state after
    errors: dict[str, str] = Field(default_factory=dict)  # deployment id -> error


def run_round(
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime,
    policy: RolloutPolicy,
) -> Round:
    """Mark the devices silent for the policy's offline silence OFFLINE, then advance every unfinished rollout."""
    offline = mark_silent_devices(devices, now=now, silence_s=policy.offline_silence_s)
    advanced, errors = {}, {}
    for record in deployments.scan_all():
        if not _needs_a_look(record):
            continue
        try:
            after = advance(
                record.deployment_id,
                devices_table=devices,
                deployments_table=deployments,
                delivery=delivery,
                now=now,
                wave_timeout_s=policy.wave_timeout_s,
                after_report=False,  # the full tally: wave timeouts, and counts that fell behind
            )
        except Exception as exc:  # noqa: BLE001 - reported per rollout; the others still advance
            errors[record.deployment_id] = f"{type(exc).__name__}: {exc}"
            continue
        advanced[record.deployment_id] = after.state.value
    return Round(marked_offline=[d.thing_name for d in offline], advanced=advanced, errors=errors)


def _needs_a_look(record: DeploymentRecord) -> bool:
    if record.state is DeploymentState.FAILED:
        return any(w.state is DeploymentState.FAILED for w in record.waves)  # not "nothing eligible"
    return record.state in _UNFINISHED
