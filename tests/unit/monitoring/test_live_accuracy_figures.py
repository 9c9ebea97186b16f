"""Live accuracy's figures against an independent computation on the same landed data (issue 17)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from live_accuracy_fixtures import DAY, DELAY_S, USE_CASE, Recorder, bucket, due_at  # noqa: F401 (fixture)

from benchmarks.monitoring_data import LOWER, UPPER, land, line_day
from edgeloop.cloud.scoring import value_now
from edgeloop.functions.live_accuracy.logic import run_round
from edgeloop.model_runtime.alignment import MAX_GAP_PERIODS, align_to_grid
from edgeloop.model_runtime.features import pack_features

HOURS = 4


def independent(data, window_start, window_end) -> dict:
    """The window's figures by hand (pandas), from the definitions, not from the function's code."""
    target = data.measurements[data.measurements["metric"] == USE_CASE.target_metric].sort_values("time_ms")
    t, v = target["time_ms"].to_numpy(), target["value"].to_numpy()
    h, lw = USE_CASE.horizon_s * 1000, USE_CASE.label_window_s * 1000
    rows = []
    for p in data.predictions:
        if not window_start <= p.predicted_for < window_end:
            continue
        made = int(p.made_at.timestamp() * 1000)
        in_label = (t >= made + h) & (t < made + h + lw)
        if in_label.sum() < 0.5 * USE_CASE.label_window_s / USE_CASE.sample_period_s or made + h + lw > t[-1] + 1:
            continue  # too sparse, or past the measured data (no run intervals in this bucket)
        before = t <= made - 1000  # the pack's last grid step is one period before its end
        fresh = before.any() and t[before][-1] >= made - USE_CASE.pack_window_s * 1000 - 5000
        rows.append(
            {
                "label": v[in_label].mean(),
                "level": p.predicted_level,
                "predicted": p.violation_class.value,
                "now": v[before][-1] if fresh else (LOWER + UPPER) / 2,
            }
        )
    frame = pd.DataFrame(rows)
    measured = np.where(
        frame["label"] < LOWER, "lsl_violation", np.where(frame["label"] > UPPER, "usl_violation", "in_range")
    )
    violation = measured != "in_range"
    flagged = frame["predicted"] != "in_range"
    hits = (frame["predicted"] == measured) & violation
    persistence_class = np.where(
        frame["now"] < LOWER, "lsl_violation", np.where(frame["now"] > UPPER, "usl_violation", "in_range")
    )
    return {
        "joined": len(frame),
        "rmse": math.sqrt(((frame["level"] - frame["label"]) ** 2).mean()),
        "mae": (frame["level"] - frame["label"]).abs().mean(),
        "persistence_rmse": math.sqrt(((frame["now"] - frame["label"]) ** 2).mean()),
        "persistence_mae": (frame["now"] - frame["label"]).abs().mean(),
        "precision": hits.sum() / flagged.sum() if flagged.any() else None,
        "recall": hits.sum() / violation.sum() if violation.any() else None,
        "persistence_recall": ((persistence_class == measured) & violation).sum() / violation.sum()
        if violation.any()
        else None,
    }


def test_figures_equal_an_independent_computation(bucket):  # noqa: F811
    data = line_day(DAY, USE_CASE, hours=HOURS, seed=3)
    land(bucket, data)
    now = due_at(DAY + timedelta(hours=HOURS))
    result = run_round(
        bucket, USE_CASE, now, landing_delay_s=DELAY_S, eventbridge=Recorder(), registered_rmse=lambda *_: 0.02
    )
    assert [r.window_start for r in result.reports] == [DAY + timedelta(hours=i) for i in range(HOURS)]
    checked_violations = 0
    for report in result.reports:
        (window,) = report.models
        expected = independent(data, report.window_start, report.window_end)
        assert window.joined == expected["joined"] > 20
        assert window.model.rmse == pytest.approx(expected["rmse"], rel=1e-9)
        assert window.model.mae == pytest.approx(expected["mae"], rel=1e-9)
        assert window.persistence.rmse == pytest.approx(expected["persistence_rmse"], rel=1e-9)
        assert window.persistence.mae == pytest.approx(expected["persistence_mae"], rel=1e-9)
        assert window.model.violation_precision == pytest.approx(expected["precision"])
        assert window.model.violation_recall == pytest.approx(expected["recall"])
        assert window.persistence.violation_recall == pytest.approx(expected["persistence_recall"])
        assert window.rmse_ratio_vs_persistence == pytest.approx(expected["rmse"] / expected["persistence_rmse"])
        assert window.rmse_ratio_vs_registration == pytest.approx(expected["rmse"] / 0.02)
        checked_violations += expected["recall"] is not None
    assert checked_violations >= 2  # the data crosses the limits: the class figures were really compared


def test_value_now_is_the_packs_last_feature():
    """Persistence's value now is the pack feature `last` the persistence baseline takes (one rule)."""
    rng = np.random.default_rng(5)
    times = np.sort(rng.choice(np.arange(0, 4_000_000, 250), size=2000, replace=False))  # gaps of all sizes
    times = np.concatenate([times[:900], times[1300:]])  # and one long gap
    values = rng.normal(size=len(times))
    ends = np.arange(400_000, 4_000_000, 7_777)
    got = value_now(ends, times, values, sample_period_s=1.0, pack_window_s=300)
    index = USE_CASE.metrics.index(USE_CASE.target_metric)
    last_column = USE_CASE.feature_names.index(USE_CASE.current_value_feature)
    expected = []
    for end in ends:
        grid = align_to_grid(
            times,
            np.full(len(times), index),
            values,
            n_metrics=len(USE_CASE.metrics),
            start_ms=int(end) - 300_000,
            n_steps=300,
            period_ms=1000,
            max_gap_ms=MAX_GAP_PERIODS * 1000,
        )
        expected.append(pack_features(grid, USE_CASE)[last_column])
    expected = np.asarray(expected, dtype=np.float64)
    assert np.isnan(expected).any() and (~np.isnan(expected)).any()
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)  # features are float32
