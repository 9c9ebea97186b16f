"""A use case: which metrics, what to predict, how windows, labels and features are built."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
    def prediction_metric(self) -> str:
        """The metric a gateway publishes its predictions as (event time = the predicted time)."""
        return f"{self.target_metric}__predicted"

    @property
    def accepted_metrics(self) -> set[str]:
        return {*self.metrics, self.prediction_metric}

    @property
    def feature_names(self) -> list[str]:
        return [f"{metric}__{stat}" for metric in self.metrics for stat in self.feature_stats]

    @classmethod
    def from_file(cls, path: str | Path) -> "UseCaseConfig":
        """Load a use case from YAML, or from JSON (what the Lambda asset ships: no PyYAML there)."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.model_validate_json(path.read_text())
        import yaml  # only where configs are authored; not on the Lambda hot path

        return cls.model_validate(yaml.safe_load(path.read_text()))


USE_CASES_DIR = Path(__file__).resolve().parent.parent / "sagemaker_pipelines" / "use_cases"


@lru_cache(maxsize=None)  # configs are immutable; handlers load theirs on every invocation
def load_use_case(name: str, directory: Path = USE_CASES_DIR) -> UseCaseConfig:
    for suffix in (".json", ".yaml"):
        path = directory / f"{name}{suffix}"
        if path.exists():
            return UseCaseConfig.from_file(path)
    raise FileNotFoundError(f"use case {name!r}: no {name}.json or {name}.yaml in {directory}")
