"""The rollout policy: one model with its defaults, read from the environment by the rollout functions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_helpers import NOW, ROLLOUT_ENVIRONMENT, RecordingDelivery, device, manifest

from edgeloop.cloud.fleet import rollout_context as rollout_context_module
from edgeloop.cloud.fleet.planning import plan_rollout
from edgeloop.cloud.fleet.rollout_context import rollout_context
from edgeloop.cloud.fleet.rollout_settings import RolloutSettings
from edgeloop.functions.wave_controller import handler as wave_controller_handler
from edgeloop.schemas import DeviceStatus, RolloutPolicy, names
from edgeloop.schemas.deployment import ROLLOUT_POLICY_ENV

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


def test_defaults():
    policy = RolloutPolicy()
    assert (policy.canary_share, policy.failure_threshold) == (0.1, 0.2)
    assert (policy.rollout_timeout_s, policy.wave_timeout_s, policy.offline_silence_s) == (3600, 900, 900)
    assert RolloutPolicy.from_environment({}) == policy


def test_every_field_has_its_variable_and_the_environment_round_trips():
    assert set(ROLLOUT_POLICY_ENV) == set(RolloutPolicy.model_fields)
    assert set(ROLLOUT_POLICY_ENV.values()) == {
        names.CANARY_SHARE_ENV,
        names.FAILURE_THRESHOLD_ENV,
        names.ROLLOUT_TIMEOUT_S_ENV,
        names.WAVE_TIMEOUT_S_ENV,
        names.OFFLINE_SILENCE_S_ENV,
    }
    policy = RolloutPolicy(
        canary_share=0.25, failure_threshold=0.05, rollout_timeout_s=7200, wave_timeout_s=120.5, offline_silence_s=60
    )
    assert RolloutPolicy.from_environment(policy.environment()) == policy


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (names.CANARY_SHARE_ENV, "0"),
        (names.CANARY_SHARE_ENV, "1.5"),
        (names.CANARY_SHARE_ENV, "a tenth"),
        (names.FAILURE_THRESHOLD_ENV, "-0.1"),
        (names.FAILURE_THRESHOLD_ENV, "2"),
        (names.ROLLOUT_TIMEOUT_S_ENV, "0"),
        (names.ROLLOUT_TIMEOUT_S_ENV, "90.5"),
        (names.WAVE_TIMEOUT_S_ENV, "-5"),
        (names.WAVE_TIMEOUT_S_ENV, "inf"),
        (names.OFFLINE_SILENCE_S_ENV, "soon"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(variable, value):
    with pytest.raises(ValueError, match="invalid rollout policy") as refused:
        RolloutPolicy.from_environment({variable: value})
    assert f"{variable}={value!r}" in str(refused.value)
    with pytest.raises(ValueError) as refused:
        RolloutSettings.from_env({**ROLLOUT_ENVIRONMENT, variable: value})
    assert f"{variable}={value!r}" in str(refused.value)


def test_a_flag_is_not_a_number():
    with pytest.raises(ValueError, match="is a boolean, not a number"):
        RolloutPolicy(canary_share=True)


def test_the_rollout_functions_get_the_policy_from_their_environment(monkeypatch):
    settings = RolloutSettings.from_env({**ROLLOUT_ENVIRONMENT, names.CANARY_SHARE_ENV: "0.5"})
    assert settings.policy == RolloutPolicy(canary_share=0.5)
    assert RolloutSettings.from_env(ROLLOUT_ENVIRONMENT).policy == RolloutPolicy()
    delivery = RecordingDelivery()
    monkeypatch.setattr(rollout_context_module, "delivery_from_settings", lambda settings: delivery)
    with rollout_context(settings) as rollout:
        assert (rollout.policy, rollout.delivery) == (settings.policy, delivery)
    assert delivery.closed


def test_the_plan_follows_the_policy():
    fleet = [device(f"gw-{i:02d}") for i in range(10)]
    policy = RolloutPolicy(canary_share=0.5, failure_threshold=0.3, rollout_timeout_s=600)
    record = plan_rollout(manifest(), fleet, model_package_arn=ARN, policy=policy, now=NOW)
    assert [len(w.targets) for w in record.waves] == [5, 5]
    assert {w.failure_threshold for w in record.waves} == {0.3}
    assert record.timeout_s == 600
    default = plan_rollout(manifest(), fleet, model_package_arn=ARN, now=NOW)
    assert [len(w.targets) for w in default.waves] == [1, 9] and default.timeout_s == 3600


def test_the_wave_controller_marks_offline_after_the_configured_silence(devices, handler_delivery, monkeypatch):
    devices.put(device("gw-quiet", last_seen=NOW - timedelta(days=400)))  # the handler uses the real clock
    monkeypatch.setenv(names.OFFLINE_SILENCE_S_ENV, str(3650 * 86_400))  # ten years: not silent enough
    handler_delivery()
    assert wave_controller_handler.lambda_handler({"source": "aws.events"}, None)["marked_offline"] == []
    assert devices.get("gw-quiet").status is DeviceStatus.REGISTERED
