"""`edgeloop fleet status|history|why-not` against moto's DynamoDB, through the top-level CLI."""

from __future__ import annotations

import json

import pytest
from fleet_helpers import DEPLOYMENT_TABLE, DEVICE_TABLE, MODEL_BUCKET, NOW, device, manifest
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.cloud.fleet.devices import DeviceWrite
from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.schemas import Architecture, DeviceStatus, Precision, names

PACKAGE_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


@pytest.fixture
def fleet(devices, deployments, monkeypatch):
    monkeypatch.setenv(names.DEVICE_TABLE_ENV, DEVICE_TABLE)
    monkeypatch.setenv(names.DEPLOYMENT_TABLE_ENV, DEPLOYMENT_TABLE)
    devices.put(device("gw-a", current_model_version="2.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-b", site="plant-b", architecture=Architecture.ARMV7L, runtime_version="1.0.0"))
    return devices


def run(*args: str):
    return CliRunner().invoke(app, ["fleet", *args])


def test_status_table_and_json(fleet):
    result = run("status", "--site", "plant-a")
    assert result.exit_code == 0, result.output
    assert "gw-a" in result.output and "gw-b" not in result.output
    result = run("status", "--model", "2.0.0", "--json")
    assert result.exit_code == 0, result.output
    assert [d["thing_name"] for d in json.loads(result.output)["devices"]] == ["gw-a"]


def test_status_refuses_a_bad_filter_naming_it(fleet):
    result = run("status", "--status", "lost")
    assert result.exit_code == 2
    assert "status='lost'" in result.output


def test_history_newest_first(fleet):
    pending = {"status": DeviceStatus.PENDING, "deployment_id": "dep-7", "status_since": NOW}
    fleet.compare_and_swap_with_history("gw-b", lambda s: DeviceWrite(s.record.model_copy(update=pending)))
    result = run("history", "gw-b", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert [e["event"] for e in document["history"]] == ["pending"]
    assert document["history"][0]["deployment_id"] == "dep-7"
    result = run("history", "gw-b")
    assert result.exit_code == 0 and "dep-7" in result.output
    result = run("history", "gw-zz")
    assert result.exit_code == 2 and "thing='gw-zz'" in result.output


def test_why_not_lists_incompatible_devices(fleet, deployments):
    model = manifest()
    model = model.model_copy(update={"tiers": [model.tier(Precision.FP32)]})  # x86_64 and aarch64 only
    # No model package in the registry: the CLI explains from the rollout's plan.
    record = plan_rollout(model, fleet.scan_all(), model_package_arn=PACKAGE_ARN, now=NOW)
    deployments.put_if_absent(record, model_updates(model, record.deployment_id, MODEL_BUCKET))
    result = run("why-not", "2.0.0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["on_version"] == ["gw-a"]
    (explained,) = report["devices"]
    assert explained["thing_name"] == "gw-b" and explained["category"] == "incompatible"
    assert "architecture armv7l" in explained["reason"]
    result = run("why-not", "2.0.0")
    assert result.exit_code == 0 and "incompatible" in result.output
    result = run("why-not", "v2")
    assert result.exit_code == 2 and "model_version='v2'" in result.output


def test_plan_previews_a_rollout_under_the_policy_options(fleet, deployments, tmp_path, monkeypatch):
    for i in range(8):
        fleet.put(device(f"gw-x{i}"))
    path = tmp_path / "manifest.json"
    path.write_text(manifest().model_dump_json())

    result = run("plan", str(path), "--canary-share", "0.5", "--failure-threshold", "0.3", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["policy"]["canary_share"] == 0.5
    waves = document["plan"]["waves"]
    assert [(w["precision"], len(w["targets"])) for w in waves] == [("fp32", 5), ("fp32", 4), ("fp16-leaves", 1)]
    assert {w["failure_threshold"] for w in waves} == {0.3}
    assert deployments.scan_all() == []  # a preview writes nothing

    monkeypatch.setenv(names.CANARY_SHARE_ENV, "1")  # the rollout functions' variable is the default
    result = run("plan", str(path))
    assert result.exit_code == 0, result.output
    assert "canary share 1" in result.output and "gw-x7" in result.output

    result = run("plan", str(path), "--canary-share", "0")
    assert result.exit_code == 2 and "--canary-share=0.0" in result.output
    result = run("plan", str(tmp_path / "missing.json"))
    assert result.exit_code == 2 and "is neither a model package ARN" in result.output
