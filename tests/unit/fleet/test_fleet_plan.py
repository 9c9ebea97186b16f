"""Rollout planning: who gets which tier, in which wave, and exactly why the others do not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_helpers import NOW, device, manifest, tier

from edgeloop.cloud.fleet.planning import deployment_id_for, model_updates, plan_rollout
from edgeloop.schemas import Architecture, DeploymentState, DeviceStatus, Precision, RolloutPolicy

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"
ALL = [Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED]


def _three_tier_manifest():
    return manifest(
        [
            tier(Precision.QUANTIZED, [Architecture.ARMV7L, Architecture.X86_64, Architecture.AARCH64], "1.0.0"),
            tier(Precision.FP32, [Architecture.X86_64, Architecture.AARCH64], "1.0.0"),
            tier(Precision.FP16_LEAVES, [Architecture.ARMV7L, Architecture.AARCH64], "1.9.0"),
        ],
        line_ids=["line-1", "line-3"],
    )


def _mixed_fleet():
    return [
        device("gw-x86", architecture="x86_64", runtime_version="1.2.0", supported_precisions=ALL),
        device("gw-a64", architecture="aarch64", runtime_version="1.0.5", supported_precisions=ALL, line_id="line-3"),
        device(
            "gw-a64-fp16",
            architecture="aarch64",
            runtime_version="1.9.0",
            supported_precisions=["fp16-leaves", "quantized"],
        ),
        device("gw-a64-picky", architecture="aarch64", runtime_version="1.0.5", supported_precisions=["fp16-leaves"]),
        # 1.10.0 >= 1.9.0 by semver (as strings it would sort below)
        device("gw-arm-new", architecture="armv7l", runtime_version="1.10.0", supported_precisions=ALL),
        device("gw-arm-old", architecture="armv7l", runtime_version="1.2.0", supported_precisions=ALL),
        device("gw-arm-ancient", architecture="armv7l", runtime_version="0.9.0", supported_precisions=ALL),
        device("gw-offline", status=DeviceStatus.OFFLINE, status_since=NOW - timedelta(hours=3)),
        device("gw-line-2", line_id="line-2"),
        device("gw-other-use-case", use_case="extrusion_temp"),
    ]


def test_each_device_gets_the_most_precise_tier_it_can_run_and_the_others_are_explained():
    record = plan_rollout(_three_tier_manifest(), _mixed_fleet(), model_package_arn=ARN, now=NOW)

    cohorts = {}
    for wave in record.waves:
        cohorts.setdefault(wave.precision, []).extend(wave.targets)
    assert {p: sorted(t) for p, t in cohorts.items()} == {
        Precision.FP32: ["gw-a64", "gw-x86"],
        Precision.FP16_LEAVES: ["gw-a64-fp16", "gw-arm-new"],
        Precision.QUANTIZED: ["gw-arm-old"],
    }
    assert {e.thing_name: e.reason for e in record.excluded} == {
        "gw-a64-picky": (
            "precision fp32 not in supported precisions [fp16-leaves]; "
            "runtime 1.0.5 < 1.9.0 of fp16-leaves tier; "
            "precision quantized not in supported precisions [fp16-leaves]"
        ),
        "gw-arm-ancient": (
            "architecture armv7l not in fp32 tier [x86_64, aarch64]; "
            "runtime 0.9.0 < 1.9.0 of fp16-leaves tier; "
            "runtime 0.9.0 < 1.0.0 of quantized tier"
        ),
        "gw-offline": "offline since 2026-11-23T09:00:00+00:00",
        "gw-line-2": "line line-2 not targeted",
    }
    assert record.state is DeploymentState.PLANNED
    assert (record.model_id, record.model_version, record.model_package_arn) == ("extrusion-line-1", "2.0.0", ARN)
    assert record.created_at == NOW and record.reason == ""


def test_single_tier_exclusion_reads_plainly():
    fp32_only = manifest([tier(Precision.FP32, [Architecture.X86_64])])
    fleet = [
        device("gw-1"),
        device("gw-arm", architecture="armv7l"),
        device("gw-old", runtime_version="0.9.0"),
        device("gw-no-fp32", supported_precisions=["quantized"]),
    ]
    record = plan_rollout(fp32_only, fleet, model_package_arn=ARN, now=NOW)
    assert record.targets == ["gw-1"]
    assert [(e.thing_name, e.reason) for e in record.excluded] == [
        ("gw-arm", "architecture armv7l not in fp32 tier [x86_64]"),
        ("gw-no-fp32", "precision fp32 not in supported precisions [quantized]"),
        ("gw-old", "runtime 0.9.0 < 1.0.0 of fp32 tier"),
    ]


def test_waves_are_a_canary_then_the_rest_per_tier_most_precise_first():
    fleet = [device(f"gw-x{i:02d}") for i in range(12)] + [
        device(f"gw-a{i:02d}", architecture="armv7l") for i in range(3)
    ]
    record = plan_rollout(
        manifest(),
        fleet,
        model_package_arn=ARN,
        policy=RolloutPolicy(canary_share=0.1, failure_threshold=0.25),
        now=NOW,
    )

    shape = [(w.index, w.precision, len(w.targets), w.state) for w in record.waves]
    assert shape == [
        (0, Precision.FP32, 2, DeploymentState.PLANNED),  # ceil(0.1 * 12) = 2
        (1, Precision.FP32, 10, DeploymentState.PLANNED),
        (2, Precision.FP16_LEAVES, 1, DeploymentState.PLANNED),  # at least one canary
        (3, Precision.FP16_LEAVES, 2, DeploymentState.PLANNED),
    ]
    assert sorted(record.targets) == sorted(d.thing_name for d in fleet)
    assert all(w.failure_threshold == 0.25 for w in record.waves)
    # Deterministic for one package, so a repeated approval plans the same waves.
    assert (
        plan_rollout(
            manifest(),
            list(reversed(fleet)),
            model_package_arn=ARN,
            policy=RolloutPolicy(canary_share=0.1, failure_threshold=0.25),
            now=NOW,
        )
        == record
    )


@pytest.mark.parametrize(
    ("devices", "share", "canaries"), [(30, 0.1, 3), (10, 0.1, 1), (1, 0.1, 1), (5, 1.0, 5), (7, 0.5, 4)]
)
def test_canary_size_is_the_ceiling_of_the_share(devices, share, canaries):
    record = plan_rollout(
        manifest(),
        [device(f"gw-{i}") for i in range(devices)],
        model_package_arn=ARN,
        policy=RolloutPolicy(canary_share=share),
        now=NOW,
    )
    assert len(record.waves[0].targets) == canaries
    assert sum(len(w.targets) for w in record.waves) == devices
    assert len(record.waves) == (1 if canaries == devices else 2)


def test_no_eligible_device_plans_a_failed_rollout_with_the_reason():
    record = plan_rollout(manifest(), [device("gw-1", line_id="line-9")], model_package_arn=ARN, now=NOW)
    assert record.waves == [] and record.state is DeploymentState.FAILED
    assert (
        record.reason
        == "no device of use case 'extrusion' on lines ['line-1'] can run any tier of extrusion-line-1 2.0.0"
    )
    assert record.excluded[0].reason == "line line-9 not targeted"


def test_deployment_id_is_stable_readable_and_distinct_per_package():
    first = deployment_id_for(ARN)
    assert first == deployment_id_for(ARN)
    assert first.startswith("edgeloop-extrusion-line-1-3-")
    assert first != deployment_id_for(ARN[:-1] + "4")
    assert first != deployment_id_for(ARN.replace("eu-west-1", "us-east-1"))
    assert len(deployment_id_for(ARN.replace("line-1", "x" * 300))) <= 73


def test_model_updates_point_at_each_tiers_payload():
    updates = model_updates(manifest(), "dep-1", "models-bucket")
    assert set(updates) == {Precision.FP32, Precision.FP16_LEAVES}
    fp16 = updates[Precision.FP16_LEAVES]
    assert fp16.payload_uri == "s3://models-bucket/models/extrusion-line-1/2.0.0/fp16-leaves.npz"
    assert fp16.sha256 == manifest().tier(Precision.FP16_LEAVES).sha256
    assert (fp16.deployment_id, fp16.version, fp16.features) == ("dep-1", "2.0.0", manifest().features)
