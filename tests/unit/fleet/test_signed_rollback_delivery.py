"""Issue 14: `edgeloop models rollback` signs a rollback of a line's deployment with the model signing key
and the orchestrator carries it, attached to the earlier version's ModelUpdate, to that deployment's devices
(the most precise tier each runs); the deployment stops. Without a key the command fails and says why."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fleet_helpers import DEPLOYMENT_TABLE, MODEL_BUCKET, NOW, device, manifest
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.waves import begin
from edgeloop.functions.orchestrator import handler as orchestrator_handler
from edgeloop.functions.orchestrator.logic import _mark_targets_pending
from edgeloop.functions.orchestrator.rollback import SIGNED_ROLLBACK_WAVE_BASE, rollback_event
from edgeloop.model_runtime.signing import (
    generate_private_key,
    identity_of_manifest,
    private_key_pem,
    sign_identity,
    sign_rollback,
)
from edgeloop.schemas import Architecture, DeploymentState, DeviceStatus, Precision, RolloutPolicy
from edgeloop.schemas.signed_model import RollbackAuthorization, SignedRollback

KEY = generate_private_key()
OLD_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/2"
NEW_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


def _signed(version: str):
    unsigned = manifest(version=version)
    return unsigned.model_copy(update={"identity": sign_identity(identity_of_manifest(unsigned, 1), KEY)})


@pytest.fixture
def rolled_out(devices, deployments, handler_delivery):
    """1.0.0 delivered earlier; 2.0.0 rolled out to gw-00 (x86_64) and gw-01 (armv7l); gw-09 is on line 2."""
    delivery = handler_delivery()
    old_manifest = _signed("1.0.0")
    old = plan_rollout(old_manifest, [], model_package_arn=OLD_ARN, now=NOW - timedelta(days=3))
    assert deployments.put_if_absent(old, model_updates(old_manifest, old.deployment_id, MODEL_BUCKET))
    fleet = [
        device("gw-00", current_model_id="extrusion-line-1", current_model_version="1.0.0", status=DeviceStatus.APPLIED),
        device(
            "gw-01", architecture=Architecture.ARMV7L, current_model_id="extrusion-line-1",
            current_model_version="1.0.0", status=DeviceStatus.APPLIED,
        ),
        device("gw-09", line_id="line-2"),
    ]  # fmt: skip
    for d in fleet:
        devices.put(d)
    new_manifest = _signed("2.0.0")
    record = plan_rollout(
        new_manifest, fleet, model_package_arn=NEW_ARN, policy=RolloutPolicy(canary_share=1.0), now=NOW
    )
    assert deployments.put_if_absent(record, model_updates(new_manifest, record.deployment_id, MODEL_BUCKET))
    _mark_targets_pending(record, devices, NOW)
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery, now=NOW)
    delivery.deliveries.clear()
    return record, delivery


def _rollback(deployment_id: str, **fields) -> SignedRollback:
    document = {
        "model_id": "extrusion-line-1", "use_case": "extrusion", "line_id": "line-1", "to_version": "1.0.0",
        "rolls_back_deployment_id": deployment_id, "rolls_back_version": "2.0.0", "issued_at_ms": 5,
    }  # fmt: skip
    return sign_rollback(RollbackAuthorization(**{**document, **fields}), KEY)


def test_the_orchestrator_delivers_the_signed_rollback_with_the_older_update(rolled_out, devices, deployments):
    record, delivery = rolled_out
    assert {t for w in record.waves for t in w.targets} == {"gw-00", "gw-01"}  # gw-01's wave never started
    signed = _rollback(record.deployment_id)

    result = orchestrator_handler.lambda_handler(rollback_event(signed), None)

    assert result["delivered"] == {"gw-00": "fp32", "gw-01": "fp16-leaves"}, result
    by_precision = {
        wave.precision: (deployment_id, wave, update) for deployment_id, wave, update in delivery.deliveries
    }
    assert set(by_precision) == {Precision.FP32, Precision.FP16_LEAVES}
    for deployment_id, wave, update in by_precision.values():
        assert deployment_id == update.deployment_id == record.deployment_id
        assert wave.index >= SIGNED_ROLLBACK_WAVE_BASE and update.version == "1.0.0" and update.rollback == signed
        assert update.identity.document.version == "1.0.0"  # the older version's own signed identity
    assert by_precision[Precision.FP16_LEAVES][1].targets == ["gw-01"]
    for thing in ("gw-00", "gw-01"):
        stored = devices.get(thing)
        assert stored.status is DeviceStatus.ROLLED_BACK and stored.desired_model_version == "1.0.0"
        assert "signed rollback" in stored.reason
    assert deployments.get(record.deployment_id).state is DeploymentState.ROLLED_BACK


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"rolls_back_version": "3.0.0"}, "rolls_back_version=3.0.0: deployment"),
        ({"to_version": "0.9.0"}, "to_version=0.9.0: no rollout recorded"),
        ({"rolls_back_deployment_id": "dep-nope"}, "rolls_back_deployment_id='dep-nope': no such deployment"),
    ],
)
def test_a_rollback_the_fleet_cannot_carry_out_is_refused_with_its_reason(rolled_out, deployments, fields, fragment):
    record, delivery = rolled_out
    result = orchestrator_handler.lambda_handler(rollback_event(_rollback(record.deployment_id, **fields)), None)
    assert fragment in result["refused"] and delivery.deliveries == []
    assert deployments.get(record.deployment_id).state is not DeploymentState.ROLLED_BACK


def _cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, ["models", "rollback", *args], env=env or {})


def test_the_command_signs_and_delivers_the_rollback_of_the_lines_newest_deployment(rolled_out, tmp_path):
    record, delivery = rolled_out
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(private_key_pem(KEY))
    out = tmp_path / "rollback.json"
    result = _cli(
        "--line", "line-1", "--use-case", "extrusion", "--to-version", "1.0.0", "--signing-key", str(key_file),
        "--deployment-table", DEPLOYMENT_TABLE, "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    signed = SignedRollback.model_validate_json(out.read_text())
    assert signed.document.rolls_back_deployment_id == record.deployment_id
    assert signed.document.rolls_back_version == "2.0.0" and signed.document.line_id == "line-1"
    assert {update.rollback for _, _, update in delivery.deliveries} == {signed}
    assert json.loads(result.output[result.output.index('{\n  "deployment_id"') :])["delivered"]["gw-00"] == "fp32"


@pytest.mark.parametrize(
    ("key_args", "fragment"),
    [([], "no signing key: --signing-key FILE"), (["--signing-key", "/nonexistent/key.pem"], "cannot be read")],
)
def test_the_command_fails_clearly_without_the_key(rolled_out, key_args, fragment):
    _, delivery = rolled_out
    result = _cli(
        "--line", "line-1", "--use-case", "extrusion", "--to-version", "1.0.0", "--deployment-table", DEPLOYMENT_TABLE,
        *key_args, env={"EDGELOOP_MODEL_SIGNING_KEY": ""},
    )  # fmt: skip
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert delivery.deliveries == []
