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

from .common import Contract


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
