"""The whole loop at a small size: what `make demo` shows, asserted."""

from __future__ import annotations

import html

import pytest
from report_browser import render, undrawn_figures

from edgeloop.demo.run import run_demo
from edgeloop.demo.settings import DemoSettings
from edgeloop.schemas import DeviceStatus, names


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(
        lines=2,
        history_hours=4.0,  # two runs per line (the simulator's runs last 1.5-3 h): one is held out
        offline_minutes=20.0,
        live_minutes=10.0,
        live_speedup=120.0,
        workdir=workdir / "work",
        report_path=workdir / "demo-report.html",
        timeout_s=300.0,
    )
    return run_demo(settings)


def test_every_accepted_sample_lands_exactly_once(outcome):
    assert outcome.samples_sent > 2 * 4 * 3600 * 10 * 0.99  # history alone: lines x hours x metrics at 1 Hz
    assert outcome.samples_landed == outcome.samples_sent
    assert outcome.samples_quarantined == 0


def test_every_line_is_judged_against_the_baselines_on_its_newest_run(outcome):
    assert sorted(outcome.evaluations) == ["line-1", "line-2"]
    for line_id, evaluation in outcome.evaluations.items():
        assert set(evaluation.figures) == {"model", "persistence", "setpoint", "oracle"}, line_id
        assert evaluation.report.gate is not None and evaluation.report.reason, line_id
        assert evaluation.report.baselines["persistence"].n_test == evaluation.report.candidate.n_test > 0
        assert evaluation.reference_runs and evaluation.rows_train > 0, line_id
        # the gate's figures are the ones it decided on
        gate = evaluation.report.gate
        assert gate.persistence_rmse == evaluation.report.baselines["persistence"].rmse
    text = outcome.report_path.read_text()
    assert "Model vs trivial baselines" in text and "persistence" in text and "setpoint" in text


def test_the_oracle_sits_beside_the_model_and_no_recall_of_a_present_class_is_a_silent_zero(outcome):
    from edgeloop.demo.explain import CLASS_NAMES, shows_zero
    from edgeloop.demo.gate import comparison_rows, oracle_lines, recall_zero_notes

    notes = recall_zero_notes(outcome.evaluations)
    for line_id, evaluation in outcome.evaluations.items():
        oracle = evaluation.oracle
        assert oracle is not None, f"{line_id}: {evaluation.oracle_missing}"
        assert oracle.metrics.n_test == evaluation.report.candidate.n_test, line_id  # the same held-out rows
        for cls, count in evaluation.class_counts.items():
            recall = evaluation.report.candidate.recall
            if not count:
                assert cls not in recall, cls  # an absent class has no recall (the table reads "absent")
            elif shows_zero(recall[cls]):
                assert [n for n in notes if n.startswith(f"{line_id} {CLASS_NAMES[cls]}: the model recalls none")], cls
    rows = comparison_rows(outcome.evaluations)
    cells = [cell for row in rows for cell in row[-1].split(" / ")]
    assert "0.00" not in cells  # a 0.00 shown is marked as explained (0.00*), an absent class reads "absent"
    text = outcome.report_path.read_text()
    assert "<td>oracle (hidden state)</td>" in text and "<th>margin</th>" in text
    for line in oracle_lines(outcome.evaluations):  # the oracle's recall at the model's precision, per line
        assert html.escape(line) in text, line
    for note in notes:
        assert html.escape(note) in text, note


def test_a_line_is_registered_and_rolled_out_only_if_its_model_passed_the_gate(outcome):
    for line_id, evaluation in outcome.evaluations.items():
        assert (line_id in outcome.models) == evaluation.passed == evaluation.registered, line_id
        on_new = {d.thing_name for d in outcome.fleet if d.current_model_version == "1.0.0"}
        assert (f"gw-{line_id}" in on_new) == evaluation.passed, line_id
    assert outcome.registered_only_if_passed
    for model in outcome.models.values():  # the registry carries the reference figures beside persistence's
        assert "persistence:rmse=" in model.registry_metadata["edgeloop:reference:baselines"], model.line_id
    assert outcome.models, "no line's model beat persistence: the demo rolled nothing out"


def test_a_model_per_passing_line_is_registered_with_its_hardware_metadata(outcome):
    for model in outcome.models.values():
        assert model.approval_status == "Approved"
        assert model.registry_metadata[names.MANIFEST_URI_METADATA_KEY].startswith(f"s3://{names.LOCAL_MODEL_BUCKET}/")
        assert "x86_64" in " ".join(model.registry_metadata.values())
        assert model.metrics.n_test > 0 and model.metrics.mae > 0


def test_every_gateway_reports_the_deployed_version_in_dynamodb(outcome):
    assert len(outcome.fleet) == 2
    for device in outcome.fleet:
        if device.thing_name in outcome.rolled_out_things:
            assert device.status is DeviceStatus.APPLIED, device.reason
            assert device.current_model_version == "1.0.0"
    assert outcome.ok


def test_the_report_plots_live_predictions_against_measurements(outcome):
    for line_id in outcome.models:  # a refused line's gateway has no model to score with
        points = outcome.live_points[line_id]
        assert points >= 10, f"{line_id}: only {points} live predictions could be compared with measurements"
        # the models predict a ~3-5 mm diameter 5 minutes ahead; a broken scorer would be far off
        assert outcome.live_mae[line_id] < 0.1, f"{line_id}: live MAE {outcome.live_mae[line_id]:.3f} mm"
    text = outcome.report_path.read_text()
    assert "predicted (gateway)" in text and "measured" in text and "spec upper limit" in text
    assert "plotly" in text.lower()


def test_rollups_and_context_slices_cover_every_line(outcome):
    from edgeloop.cloud.datalake.rollups import LEVELS

    assert list(outcome.rollup_rows) == list(LEVELS)
    # 4 h of 1 Hz history per line: many 1-minute rows, fewer coarser ones, at least a row per metric at 1d.
    rows = outcome.rollup_rows
    assert rows["1m"] > rows["5m"] > rows["1h"] >= rows["1d"] > 0
    for line_id in ("line-1", "line-2"):
        # every curated sample is in exactly one 1h bucket (rows beyond the lateness SLA live in
        # late/ instead of curated/, so rollups never see them)
        assert outcome.curated_samples[line_id] > 0
        assert outcome.rollup_samples_1h[line_id] == outcome.curated_samples[line_id], line_id
        # the simulated runs cover the history and the live phase: at least the 4 h of history
        # (less the changeovers between runs, which are not runs)
        assert outcome.context_slices[line_id] >= 180, line_id
    landed = sum(outcome.curated_samples.values()) + sum(outcome.late_samples.values())
    assert landed == outcome.samples_sent


def test_the_query_layer_answers_a_role_query_on_the_demo_data(outcome):
    # rollups_by_role on DuckDB over the mirrored bucket: die temperature per line, hourly, in °C
    assert set(outcome.role_query_rows) == {"line-1", "line-2"}
    for line_id, rows in outcome.role_query_rows.items():
        assert rows >= 4, line_id  # 4 h of history plus the live phase
        assert 150.0 < outcome.role_query_mean[line_id] < 300.0, line_id  # the simulator's die runs near 200 °C


def test_the_gateways_predictions_land_and_live_accuracy_compares_them_with_persistence(outcome):
    for line_id in outcome.models:  # the rolled-out lines' gateways classify and publish their predictions
        assert outcome.predictions_landed[line_id] >= 10, line_id
        windows = outcome.live_accuracy[line_id]
        assert windows, f"{line_id}: live accuracy scored no window"
        assert sum(w.joined for w in windows) >= 0.8 * outcome.live_points[line_id], line_id
        for window in windows:
            assert window.version == "1.0.0" and window.model and window.persistence, window
    text = outcome.report_path.read_text()
    assert "Violation alerts (on the gateways, landed in S3)" in text
    assert "Live accuracy vs persistence" in text and "persistence RMSE" in text
    for line_id, episodes in outcome.alerts.items():  # whatever the live period raised: paired, with lead times
        for episode in episodes:
            assert episode.raised is not None and episode.lead_time_s > 0, (line_id, episode)
            assert html.escape(episode.violation_class) in text


def test_the_demo_report_draws_every_figure_in_a_real_browser(outcome, tmp_path_factory):
    page = render(outcome.report_path, tmp_path_factory.mktemp("browser"))
    assert page.console == [], page.console
    assert not undrawn_figures(page.dom)
