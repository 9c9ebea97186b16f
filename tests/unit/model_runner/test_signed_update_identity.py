# ruff: noqa: F811  (the fixtures imported from test_update_refusals are parameters here)
"""Issue 14: a device with a key refuses signed updates that are replayed, downgraded or meant for another line,
and refuses an update without the signed identity; a device without a key bounds the npz before loading it.
Each refusal leaves the previous model serving, bit for bit; the fleet's automatic restore is still applied
(signed rollbacks: test_signed_rollback.py).

The models are the real pipeline's (export + the register step's identity signing, test_update_refusals.py).
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import zipfile

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

from edgeloop.greengrass_components.model_runner.agent import UpdateAgent
from edgeloop.model_runtime.payload_checks import MAX_PAYLOAD_DECODED_BYTES, check_npz_bounds
from edgeloop.model_runtime.signing import generate_private_key, public_key_b64, sign_identity
from edgeloop.schemas import DeviceStatus, Precision

BOMB_BYTES = 256 << 20  # deflates to ~250 KB


@pytest.fixture(scope="module")
def line_2_model(live_features, signing_key):
    return exported("3.0.0", live_features, signing_key, seed=3, line_id="line-2")


def _on_v2(device, models):
    """The device fixture (v1 applied under dep-1.0.0) after v2 was applied under dep-2.0.0."""
    agent, live, store, sent, probe, _ = device
    report = agent.handle(deliverable(models[1], store))
    assert report.status is DeviceStatus.APPLIED, report.reason
    return agent, live, store, probe, live.active.predict(probe)


def _refused(agent, live, probe, before, update, version, *fragments):
    report = agent.handle(update)
    assert report.status is DeviceStatus.REJECTED, report.reason
    for fragment in fragments:
        assert fragment in report.reason, (fragment, report.reason)
    assert live.active.version == version and agent.current.version == version
    assert np.array_equal(live.active.predict(probe), before)  # bit for bit: nothing of the refused one got in


def test_a_replayed_older_signed_update_is_refused(device, models):
    agent, live, store, probe, before = _on_v2(device, models)
    replay = deliverable(models[0], store)  # v1's own update, signature and identity intact, dep-1.0.0
    _refused(agent, live, probe, before, replay, "2.0.0", "downgrade refused", "1.0.0", "dep-2.0.0")


def test_the_replay_is_still_refused_after_a_restart(device, models, signing_key, tmp_path):
    _on_v2(device, models)
    store = device[2]
    live = _fresh_live()
    restarted = UpdateAgent(
        THING, USE_CASE, live, lambda r: None, store, state_dir=tmp_path / "model",
        public_key=public_key_b64(signing_key), line_id="line-1",
    )  # fmt: skip
    assert restarted.restore().version == "2.0.0"
    probe = device[4]
    _refused(restarted, live, probe, live.active.predict(probe), deliverable(models[0], store), "2.0.0", "downgrade")


def test_another_lines_signed_update_is_refused(device, line_2_model):
    agent, live, store, _, probe, before = device
    update = deliverable(line_2_model, store)
    _refused(agent, live, probe, before, update, "1.0.0", "signed identity does not match", "line 'line-1'")


def test_another_lines_payload_relabelled_for_this_line_is_refused(device, models, line_2_model):
    """The update says line 1's model; the signed identity and the payload are line 2's."""
    agent, live, store, _, probe, before = device
    update = deliverable(line_2_model, store).model_copy(update={"model_id": models[0].manifest.model_id})
    _refused(agent, live, probe, before, update, "1.0.0", "signed identity does not match")


def test_an_identity_edited_to_name_this_line_does_not_verify(device, line_2_model):
    agent, live, store, _, probe, before = device
    update = deliverable(line_2_model, store)
    document = update.identity.document.model_copy(update={"line_ids": ["line-1"]})
    forged = update.identity.model_copy(update={"document": document})
    _refused(agent, live, probe, before, update.model_copy(update={"identity": forged}), "1.0.0", "does not verify")


def test_an_identity_signed_by_another_key_is_refused(device, models):
    agent, live, store, _, probe, before = device
    update = deliverable(models[1], store)
    other = sign_identity(update.identity.document, generate_private_key())
    _refused(agent, live, probe, before, update.model_copy(update={"identity": other}), "1.0.0", "does not verify")


@pytest.mark.parametrize("stripped", [{"identity": None}, {"identity": None, "signature": None}])
def test_an_update_without_the_signed_identity_is_refused_with_a_key(device, models, stripped):
    """A payload-signed update from before identities (replayable anywhere), and a wholly unsigned one."""
    agent, live, store, _, probe, before = device
    update = deliverable(models[1], store).model_copy(update=stripped)
    expected = "carries no signed identity" if stripped.get("signature", 1) is not None else "unsigned payload"
    _refused(agent, live, probe, before, update, "1.0.0", expected)


def test_the_fleets_automatic_restore_of_the_model_run_just_before_is_applied(device, models):
    """The one unsigned way back (the fleet holds no key): the model this device ran just before, in this
    process, under the running deployment's id. After a restart it takes a signed rollback
    (test_signed_rollback.py)."""
    agent, live, store, probe, _ = _on_v2(device, models)
    v1_predictions = device[5]
    # what cloud/fleet/rollback.py sends: the earlier rollout's update under the failed deployment's id
    rollback = deliverable(models[0], store).model_copy(update={"deployment_id": "dep-2.0.0"})
    report = agent.handle(rollback)
    assert report.status is DeviceStatus.APPLIED, report.reason
    assert live.active.version == "1.0.0" and np.array_equal(live.active.predict(probe), v1_predictions)


def test_a_rollback_to_a_model_the_device_never_ran_is_refused(device, models, live_features, signing_key):
    agent, live, store, probe, before = _on_v2(device, models)
    older = deliverable(exported("0.9.0", live_features, signing_key, seed=4), store)
    _refused(agent, live, probe, before, older.model_copy(update={"deployment_id": "dep-2.0.0"}), "2.0.0", "downgrade")


# --- no key: the npz is bounded before numpy allocates ------------------------------------------------
def _bomb(payload: bytes) -> bytes:
    """The payload's members plus one deflated .npy of BOMB_BYTES zeros, written in chunks."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member))
        with target.open("padding.npy", "w", force_zip64=True) as stream:
            np.lib.format.write_array_header_1_0(
                stream, {"descr": "|u1", "fortran_order": False, "shape": (BOMB_BYTES,)}
            )
            chunk = bytes(1 << 20)
            for _ in range(BOMB_BYTES >> 20):
                stream.write(chunk)
    return out.getvalue()


def test_an_oversized_npz_is_refused_before_loading_without_a_key(tmp_path, models):
    store = Store()
    live = _fresh_live()
    agent = UpdateAgent(
        THING, USE_CASE, live, lambda r: None, store, state_dir=tmp_path / "model",
        architecture=DEVICE_ARCHITECTURE, runtime_version=DEVICE_RUNTIME,
    )  # fmt: skip
    assert agent.handle(deliverable(models[0], store)).status is DeviceStatus.APPLIED
    probe = np.random.default_rng(9).normal(live.latest_window().features, 0.01, size=(64, len(USE_CASE.feature_names)))
    before = live.active.predict(probe)
    bomb = _bomb(models[1].payloads[Precision.FP32])
    assert len(bomb) < 1 << 20
    update = deliverable(models[1], store)
    uri = update.payload_uri.replace(".npz", "-bomb.npz")
    store.objects[uri] = bomb
    update = update.model_copy(
        update={
            "payload_uri": uri,
            "sha256": hashlib.sha256(bomb).hexdigest(),
            "payload_bytes": len(bomb),
            "signature": None,
            "identity": None,
        }
    )
    tracemalloc.start()
    try:
        _refused(agent, live, probe, before, update, "1.0.0", "refused before loading", "decompressed bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak} bytes while refusing a {len(bomb)}-byte npz"


def test_an_npy_header_declaring_more_than_its_member_holds_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target, target.open("a.npy", "w") as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "<f8", "fortran_order": False, "shape": (1 << 27,)})
        stream.write(bytes(16))
    with pytest.raises(ValueError, match="declares shape"):
        check_npz_bounds(out.getvalue())
    assert MAX_PAYLOAD_DECODED_BYTES < BOMB_BYTES
