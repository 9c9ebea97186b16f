"""A use case with small windows, so packing tests can count answers by hand: 10-step packs every 5 s,
the label 5 s later over 4 s, three metrics."""

from __future__ import annotations

from edgeloop.schemas import UseCaseConfig

TARGET = "cold_od_average"
TINY_USE_CASE = UseCaseConfig(
    use_case="tiny",
    metrics=["speed", "temp_die", TARGET],
    target_metric=TARGET,
    sample_period_s=1,
    pack_window_s=10,
    horizon_s=5,
    label_window_s=4,
    example_stride_s=5,
    feature_stats=["mean", "std", "min", "max", "last", "slope"],
    model_families=["xgboost"],
    precisions=["fp32"],
)
