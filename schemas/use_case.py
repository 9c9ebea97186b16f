"""A use case: which metrics, what to predict, how windows, labels and features are built."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, model_validator

from .common import Contract, Identifier
from .model import ModelFamily, Precision

FEATURE_STATS = ("mean", "std", "min", "max", "last", "slope")


class UseCaseConfig(Contract):
    use_case: Identifier
    description: str = ""
    metrics: list[str] = Field(min_length=1, description="metric names the gateway sends, in order")
    target_metric: str
    sample_period_s: float = Field(gt=0, description="the model's sample grid")
    pack_window_s: int = Field(gt=0, description="length of one metric pack (feature window)")
    horizon_s: int = Field(ge=0, description="from the end of the pack to the start of the label window")
    label_window_s: int = Field(gt=0, description="the label averages the target over this span")
    example_stride_s: int = Field(gt=0, description="distance between consecutive packs")
    feature_stats: list[str] = Field(min_length=1)
    model_families: list[ModelFamily] = Field(min_length=1)
    precisions: list[Precision] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "UseCaseConfig":
        if self.target_metric not in self.metrics:
            raise ValueError(f"target_metric={self.target_metric!r} is not one of metrics {self.metrics}")
        unknown = sorted(set(self.feature_stats) - set(FEATURE_STATS))
        if unknown:
            raise ValueError(f"feature_stats {unknown} are not among {list(FEATURE_STATS)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics repeat a name: {self.metrics}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f"{metric}__{stat}" for metric in self.metrics for stat in self.feature_stats]

    @classmethod
    def from_yaml(cls, path: str | Path) -> "UseCaseConfig":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


USE_CASES_DIR = Path(__file__).resolve().parent.parent / "sagemaker_pipelines" / "use_cases"


def load_use_case(name: str) -> UseCaseConfig:
    return UseCaseConfig.from_yaml(USE_CASES_DIR / f"{name}.yaml")
