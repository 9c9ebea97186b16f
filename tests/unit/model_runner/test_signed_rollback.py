# ruff: noqa: F811  (the fixtures imported from test_update_refusals are parameters here)
"""Issue 14: going back to an older version takes the key holder's signed rollback of the deployment the
device runs (schemas/signed_model.RollbackAuthorization), and what the device accepted survives a restart:
a replayed older update, a replayed rollback and the version a rollback went back from are refused after
it too, with the previous model serving bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_update_refusals import (  # noqa: F401 (fixtures)
    DEVICE_ARCHITECTURE,
    DEVICE_RUNTIME,
    THING,
    USE_CASE,
    Store,
    _fresh_live,
    deliverable,
    device,
    exported,
    live_features,
    models,
    signing_key,
)

from edgeloop.greengrass_components.model_runner.agent import FLOOR_FILE, UpdateAgent
from edgeloop.model_runtime.signing import generate_private_key, public_key_b64, sign_rollback
from edgeloop.schemas import DeviceStatus
from edgeloop.schemas.signed_model import RollbackAuthorization


@pytest.fixture(scope="module")
def v3(live_features, signing_key):
    return exported("3.0.0", live_features, signing_key, seed=5)


def _restarted(device, signing_key):
    """A new agent on the same state directory (the model runner after a restart), restored."""
    agent, _, store, *_ = device
    live = _fresh_live()
    restarted = UpdateAgent(
        THING, USE_CASE, live, lambda r: None, store, state_dir=agent.state_dir,
        public_key=public_key_b64(signing_key), architecture=DEVICE_ARCHITECTURE,
        runtime_version=DEVICE_RUNTIME, line_id="line-1",
    )  # fmt: skip
    assert restarted.restore() is not None, restarted.restore_problems
    return restarted, live


def _rollback(export, store, key, *, deployment, rolls_back, issued_at_ms=1_000, line_id="line-1", **fields):
    """`export`'s update re-addressed to `deployment`, with the key holder's signed rollback of it."""
    update = deliverable(export, store).model_copy(update={"deployment_id": deployment})
    document = RollbackAuthorization(
        model_id=update.model_id,
        use_case=USE_CASE.use_case,
        line_id=line_id,
        to_version=update.version,
        rolls_back_deployment_id=deployment,
        rolls_back_version=rolls_back,
        issued_at_ms=issued_at_ms,
        **fields,
    )
    return update.model_copy(update={"rollback": sign_rollback(document, key)})


def _apply(agent, update):
    report = agent.handle(update)
    assert report.status is DeviceStatus.APPLIED, report.reason
    return report


def _refused(agent, live, probe, update, version, *fragments):
    before = live.active.predict(probe)
    report = agent.handle(update)
    assert report.status is DeviceStatus.REJECTED, report.reason
    for fragment in fragments:
        assert fragment in report.reason, (fragment, report.reason)
    assert live.active.version == version and agent.current.version == version
    assert np.array_equal(live.active.predict(probe), before)  # bit for bit: nothing of the refused one got in


def test_a_signed_rollback_after_a_restart_restores_the_older_model(device, models, signing_key):
    """After a restart the device has no in-memory previous model: only the signed rollback takes it back."""
    agent, _, store, _, probe, v1_predictions = device
    _apply(agent, deliverable(models[1], store))
    restarted, live = _restarted(device, signing_key)
    unsigned_restore = deliverable(models[0], store).model_copy(update={"deployment_id": "dep-2.0.0"})
    _refused(restarted, live, probe, unsigned_restore, "2.0.0", "downgrade refused", "no signed rollback")

    _apply(restarted, _rollback(models[0], store, signing_key, deployment="dep-2.0.0", rolls_back="2.0.0"))
    assert live.active.version == "1.0.0" and np.array_equal(live.active.predict(probe), v1_predictions)


def test_the_version_rolled_back_from_is_refused_even_after_a_restart(device, models, signing_key):
    agent, live, store, _, probe, _ = device
    _apply(agent, deliverable(models[1], store))
    _apply(agent, _rollback(models[0], store, signing_key, deployment="dep-2.0.0", rolls_back="2.0.0"))
    replay = deliverable(models[1], store)  # v2's own signed update, intact
    _refused(agent, live, probe, replay, "1.0.0", "was rolled back")
    restarted, live = _restarted(device, signing_key)
    assert json.loads((agent.state_dir / FLOOR_FILE).read_text())["rolled_back"] is True
    _refused(restarted, live, probe, replay, "1.0.0", "was rolled back")


def test_a_replayed_older_rollback_is_refused_after_a_restart_and_a_newer_one_applies(device, models, v3, signing_key):
    agent, _, store, _, probe, v1_predictions = device
    _apply(agent, deliverable(models[1], store))
    _apply(agent, deliverable(v3, store))
    # R0 (to 1.0.0) was signed first but captured instead of delivered; R1 (to 2.0.0) was applied.
    r0 = _rollback(models[0], store, signing_key, deployment="dep-3.0.0", rolls_back="3.0.0", issued_at_ms=1_000)
    _apply(
        agent, _rollback(models[1], store, signing_key, deployment="dep-3.0.0", rolls_back="3.0.0", issued_at_ms=2_000)
    )
    restarted, live = _restarted(device, signing_key)
    assert restarted.current.version == "2.0.0"
    _refused(restarted, live, probe, r0, "2.0.0", "issued_at_ms=1000 is not after", "2000")

    r2 = _rollback(models[0], store, signing_key, deployment="dep-3.0.0", rolls_back="3.0.0", issued_at_ms=3_000)
    _apply(restarted, r2)
    assert np.array_equal(live.active.predict(probe), v1_predictions)


@pytest.mark.parametrize(
    ("spoil", "fragments"),
    [
        ({"line_id": "line-2"}, ["signed rollback does not match", "line 'line-2'"]),
        ({"deployment": "dep-1.0.0"}, ["not the deployment this device runs", "dep-2.0.0"]),
        ({"key": "other"}, ["signed rollback", "does not verify"]),
        ({"relabel": "dep-2.0.0"}, ["signed rollback does not match", "rolls_back_deployment_id 'dep-1.0.0'"]),
    ],
    ids=["another_line", "another_deployment", "another_key", "relabelled_deployment"],
)
def test_a_rollback_that_is_not_this_devices_is_refused(device, models, signing_key, spoil, fragments):
    agent, live, store, _, probe, _ = device
    _apply(agent, deliverable(models[1], store))
    key = generate_private_key() if spoil.get("key") else signing_key
    update = _rollback(
        models[0],
        store,
        key,
        deployment=spoil.get("deployment", "dep-1.0.0" if "relabel" in spoil else "dep-2.0.0"),
        rolls_back="2.0.0",
        line_id=spoil.get("line_id", "line-1"),
    )
    if "relabel" in spoil:  # a rollback of dep-1.0.0 carried under the running deployment's id
        update = update.model_copy(update={"deployment_id": spoil["relabel"]})
    _refused(agent, live, probe, update, "2.0.0", *fragments)


def test_a_device_with_no_model_applies_an_update_that_carries_a_rollback(tmp_path, models, signing_key):
    """The fleet sends the rollback to every device of the deployment; one that never ran anything needs none."""
    store = Store()
    agent = UpdateAgent(
        THING, USE_CASE, _fresh_live(), lambda r: None, store, state_dir=tmp_path / "fresh",
        public_key=public_key_b64(signing_key), line_id="line-1",
    )  # fmt: skip
    _apply(agent, _rollback(models[0], store, signing_key, deployment="dep-2.0.0", rolls_back="2.0.0"))
    assert agent.floor.version == "1.0.0" and not agent.floor.rolled_back


def test_a_damaged_floor_file_falls_back_to_the_restored_version(device, models, signing_key):
    agent, _, store, _, probe, _ = device
    _apply(agent, deliverable(models[1], store))
    (agent.state_dir / FLOOR_FILE).write_text('{"scope": "extrusion/line-1", "version": 2}')
    restarted, live = _restarted(device, signing_key)
    assert any("version=2 is not a str" in p for p in restarted.restore_problems), restarted.restore_problems
    _refused(restarted, live, probe, deliverable(models[0], store), "2.0.0", "downgrade refused")


def test_a_rollback_document_must_go_back():
    with pytest.raises(ValueError, match="to_version=2.0.0 is not older than rolls_back_version=2.0.0"):
        RollbackAuthorization(
            model_id="m", use_case="extrusion", line_id="line-1", to_version="2.0.0",
            rolls_back_deployment_id="dep", rolls_back_version="2.0.0", issued_at_ms=1,
        )  # fmt: skip
