"""The whole loop at a small size: what `make demo` shows, asserted."""

from __future__ import annotations

import pytest

from edgeloop.demo.run import run_demo
from edgeloop.demo.settings import DemoSettings
from edgeloop.schemas import DeviceStatus, names


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(
        lines=2,
        history_hours=2.0,
        offline_minutes=20.0,
        live_minutes=10.0,
        live_speedup=120.0,
        workdir=workdir / "work",
        report_path=workdir / "demo-report.html",
        timeout_s=300.0,
    )
    return run_demo(settings)


def test_every_accepted_sample_lands_exactly_once(outcome):
    assert outcome.samples_sent > 2 * 2 * 3600 * 10 * 0.99  # history alone: lines x hours x metrics at 1 Hz
    assert outcome.samples_landed == outcome.samples_sent
    assert outcome.samples_quarantined == 0


def test_a_model_per_line_is_registered_with_its_hardware_metadata(outcome):
    assert sorted(outcome.models) == ["line-1", "line-2"]
    for model in outcome.models.values():
        assert model.approval_status == "Approved"
        assert model.registry_metadata[names.MANIFEST_URI_METADATA_KEY].startswith(f"s3://{names.LOCAL_MODEL_BUCKET}/")
        assert "x86_64" in " ".join(model.registry_metadata.values())
        assert model.metrics.n_test > 0 and model.metrics.mae > 0


def test_every_gateway_reports_the_deployed_version_in_dynamodb(outcome):
    assert len(outcome.fleet) == 2
    for device in outcome.fleet:
        assert device.status is DeviceStatus.APPLIED, device.reason
        assert device.current_model_version == "1.0.0"
    assert outcome.ok


def test_the_report_plots_live_predictions_against_measurements(outcome):
    for line_id, points in outcome.live_points.items():
        assert points >= 10, f"{line_id}: only {points} live predictions could be compared with measurements"
        # the models predict a ~3-5 mm diameter 5 minutes ahead; a broken scorer would be far off
        assert outcome.live_mae[line_id] < 0.1, f"{line_id}: live MAE {outcome.live_mae[line_id]:.3f} mm"
    text = outcome.report_path.read_text()
    assert "predicted (gateway)" in text and "measured" in text and "spec upper limit" in text
    assert "plotly" in text.lower()


def test_rollups_and_context_slices_cover_every_line(outcome):
    from edgeloop.cloud.datalake.rollups import LEVELS

    assert list(outcome.rollup_rows) == list(LEVELS)
    # 2 h of 1 Hz history per line: many 1-minute rows, fewer coarser ones, at least a row per metric at 1d.
    rows = outcome.rollup_rows
    assert rows["1m"] > rows["5m"] > rows["1h"] >= rows["1d"] > 0
    for line_id in ("line-1", "line-2"):
        # every curated sample is in exactly one 1h bucket (rows beyond the lateness SLA live in
        # late/ instead of curated/, so rollups never see them)
        assert outcome.curated_samples[line_id] > 0
        assert outcome.rollup_samples_1h[line_id] == outcome.curated_samples[line_id], line_id
        # the simulated runs cover the history and the live phase: at least the 2 h of history
        assert outcome.context_slices[line_id] >= 120, line_id
    landed = sum(outcome.curated_samples.values()) + sum(outcome.late_samples.values())
    assert landed == outcome.samples_sent


def test_the_query_layer_answers_a_role_query_on_the_demo_data(outcome):
    # rollups_by_role on DuckDB over the mirrored bucket: die temperature per line, hourly, in °C
    assert set(outcome.role_query_rows) == {"line-1", "line-2"}
    for line_id, rows in outcome.role_query_rows.items():
        assert rows >= 2, line_id  # 2 h of history plus the live phase
        assert 150.0 < outcome.role_query_mean[line_id] < 300.0, line_id  # the simulator's die runs near 200 °C
