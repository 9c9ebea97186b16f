"""How a use case's models are watched in the field and when a line's pipeline runs again (issue 17).

Live accuracy (functions/live_accuracy) scores the predictions of each line and model version per
window of `window_minutes` of predicted time, once the measurements of that window have landed. A
window is degraded when the model's RMSE is worse than persistence's (the value now) by more than
`max_rmse_ratio_vs_persistence`, or worse than the figure it was registered with by more than
`max_rmse_ratio_vs_registration`; `degraded_windows` degraded windows in a row trip the line's alarm
path, which starts the line's pipeline (functions/retraining) unless one is running or the line's
last start is within `retrain_cooldown_hours`. Independently, a line is retrained every
`retrain_every_days` (None: only on degradation).
"""

from __future__ import annotations

from pydantic import Field

from .common import Contract, Identifier, SemVer, UtcDatetime


class MonitoringConfig(Contract):
    window_minutes: int = Field(default=60, ge=5, le=24 * 60, description="live accuracy is scored per window")
    min_predictions_per_window: int = Field(
        default=20, ge=1, description="a window with fewer joined predictions is reported but never judged"
    )
    max_rmse_ratio_vs_persistence: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="degraded: live RMSE / persistence RMSE above this"
    )
    max_rmse_ratio_vs_registration: float = Field(
        default=1.5, gt=1, allow_inf_nan=False, description="degraded: live RMSE / registered RMSE above this"
    )
    degraded_windows: int = Field(default=3, ge=1, le=48, description="degraded windows in a row that trip the alarm")
    retrain_every_days: int | None = Field(default=7, ge=1, le=365, description="scheduled retraining; None: off")
    retrain_cooldown_hours: float = Field(
        default=24.0, ge=0, allow_inf_nan=False, description="no second start for a line within this"
    )
    alert_notice_interval_s: int = Field(
        default=900, ge=0, description="at most one SNS notice per line in this time (the rest are counted)"
    )
    line_metrics: bool = Field(
        default=False,
        description="also publish LIVE_ACCURACY_METRICS per line and model version (custom metrics, each billed per "
        "month: for a plant with a few lines); off: per-round aggregates and one log record per window only",
    )


# --- live accuracy (functions/live_accuracy) ----------------------------------------------------
# Its EMF metrics: namespace names.PROJECT, dimension `service` = LIVE_ACCURACY_SERVICE, and, only with
# MonitoringConfig.line_metrics, per line and model version the dimensions LIVE_ACCURACY_DIMENSIONS (values:
# line id, model_version_key()): 9 custom metrics per (line, model version), each billed per month.
LIVE_ACCURACY_SERVICE = "live_accuracy"
LIVE_ACCURACY_DIMENSIONS = ("line_id", "model_version")
LIVE_ACCURACY_METRICS = (
    "LiveRmse",
    "LiveMae",
    "PersistenceRmse",
    "LiveRmseRatioVsPersistence",
    "LiveRmseRatioVsRegistration",
    "LiveViolationPrecision",
    "LiveViolationRecall",
    "LiveLeadTimeMedian",
    "PredictionsJoined",
)
# Dimension `service` only: lines whose degraded streak reached degraded_windows in the round (the alarm's
# metric), and landed prediction lines that were not PredictionMessages (skipped, never quarantined).
DEGRADED_LINES_METRIC = "DegradedLines"
PREDICTION_LINES_SKIPPED_METRIC = "PredictionLinesSkipped"
# Dimension `service` only, every round whatever the fleet's size (a fixed number of custom metrics per use
# case): over the round's judged windows (ratios: those with the ratio defined), PredictionsJoined over all.
LIVE_ACCURACY_ROUND_METRICS = (
    "LinesJudged",
    "WindowsJudged",
    "WindowsDegraded",
    "PredictionsJoined",
    "WorstRmseRatioVsPersistence",
    "WorstRmseRatioVsRegistration",
    "MedianRmseRatioVsPersistence",
)
# One plain JSON log line per scored window (no EMF: no metric is billed), for Logs Insights: `record` is
# LIVE_ACCURACY_WINDOW_RECORD, then these fields; `status` is "degraded", "healthy" or "not judged".
LIVE_ACCURACY_WINDOW_RECORD = "live_accuracy_window"
LIVE_ACCURACY_RECORD_FIELDS = (
    "line_id",
    "model_id",
    "version",
    "model_version",
    "window_start",
    "window_end",
    "predictions",
    "joined",
    "rmse",
    "mae",
    "persistence_rmse",
    "registered_rmse",
    "rmse_ratio_vs_persistence",
    "rmse_ratio_vs_registration",
    "violation_precision",
    "violation_recall",
    "lead_time_median_s",
    "judged",
    "degraded",
    "status",
    "reasons",
)


def model_version_key(model_id: str, version: str) -> str:
    """The `model_version` metric dimension and state key of one model version."""
    return f"{model_id}@{version}"


class LiveFigures(Contract):
    """A predictor's figures over one window's joined predictions (cloud/scoring.py score_predictions)."""

    rmse: float = Field(ge=0, allow_inf_nan=False)
    mae: float = Field(ge=0, allow_inf_nan=False)
    violation_precision: float | None = Field(default=None, description="None: no violation predicted")
    violation_recall: float | None = Field(default=None, description="None: no violation measured")
    lead_time_median_s: float | None = Field(default=None, description="None: no violation episode flagged")


class LiveAccuracyWindow(Contract):
    """One model version's live accuracy on one line over one window of predicted time."""

    line_id: Identifier
    model_id: str = Field(min_length=1)
    version: SemVer
    window_start: UtcDatetime = Field(description="predicted_for in [window_start, window_end)")
    window_end: UtcDatetime
    predictions: int = Field(ge=0, description="landed predictions of the window")
    joined: int = Field(ge=0, description="of them with a label (the labeler's rule) and a persistence value")
    model: LiveFigures | None = Field(default=None, description="None: nothing joined")
    persistence: LiveFigures | None = Field(default=None, description="the measured value at made_at, same rows")
    registered_rmse: float | None = Field(default=None, description="the version's RMSE at registration")
    rmse_ratio_vs_persistence: float | None = None
    rmse_ratio_vs_registration: float | None = None
    judged: bool = Field(description="joined >= min_predictions_per_window: counts for the degraded streak")
    degraded: bool = False
    reasons: list[str] = Field(default_factory=list, description="why degraded, with both figures")


class LiveAccuracyReport(Contract):
    """monitoring/line=<id>/live_accuracy/window=<YYYY-MM-DDTHH-MM>.json: every version of one window."""

    line_id: Identifier
    window_start: UtcDatetime
    window_end: UtcDatetime
    models: list[LiveAccuracyWindow] = Field(default_factory=list)


class DegradedStreak(Contract):
    """Degraded judged windows in a row of one model version (a healthy judged window ends it)."""

    model_id: str = Field(min_length=1)
    version: SemVer
    windows: list[UtcDatetime] = Field(default_factory=list, description="window starts, oldest first")
    tripped: bool = Field(default=False, description="the alarm event went out for this streak")


class LiveAccuracyState(Contract):
    """monitoring/line=<id>/state.json: how far the line is scored, its streaks, registered figures read."""

    line_id: Identifier
    scored_through: UtcDatetime = Field(description="end of the last scored window")
    windows_scored: int = Field(default=0, ge=0)
    streaks: list[DegradedStreak] = Field(default_factory=list)
    registered_rmse: dict[str, float | None] = Field(
        default_factory=dict, description="model_version_key -> RMSE at registration (None: not found)"
    )


class ModelDegradedDetail(Contract):
    """Detail of the MODEL_DEGRADED_DETAIL_TYPE event: a version's streak reached degraded_windows."""

    line_id: Identifier
    model_id: str = Field(min_length=1)
    version: SemVer
    reason: str
    windows: list[UtcDatetime] = Field(min_length=1, description="the streak's window starts, oldest first")
