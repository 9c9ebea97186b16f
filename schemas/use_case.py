"""A use case: which metrics, what to predict, how windows, labels and features are built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from . import names
from .common import IDENTIFIER, Contract, Identifier
from .decision import DecisionConfig
from .feature_config import FeatureConfig, extra_feature_names
from .live_context import STATE_CONDITION, LiveContextConfig, StateRule  # noqa: F401  (STATE_CONDITION: re-exported)
from .model import LabelMode, ModelFamily, ModelTemplate, Precision
from .monitoring import MonitoringConfig

FEATURE_STATS = ("mean", "std", "min", "max", "last", "slope")


class ParameterRange(Contract):
    """A hyper-parameter's search range: uniform in [low, high], or log-uniform, or integers."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ParameterRange:
        if self.high < self.low:
            raise ValueError(f"high={self.high} is below low={self.low}")
        if self.log and self.low <= 0:
            raise ValueError(f"low={self.low}: a log-uniform range needs low > 0")
        return self


class TrainingConfig(Contract):
    """Randomized search over model templates with time-ordered cross-validation, per line."""

    templates: list[ModelTemplate] = Field(
        default_factory=lambda: [ModelTemplate.LASSO, ModelTemplate.RANDOM_FOREST, ModelTemplate.XGBOOST],
        min_length=1,
    )
    ranges: dict[ModelTemplate, dict[str, ParameterRange]] = Field(
        default_factory=dict, description="per template: parameter -> range, replacing the template's default range"
    )
    candidates_per_template: int = Field(default=20, ge=1, description="random draws per template and line")
    cv_folds: int = Field(default=4, ge=2, le=20, description="expanding-window folds, oldest data trains first")
    selection_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="a simpler template wins when its CV RMSE is within this share of the spec width (U - L) "
        "of the best RMSE",
    )
    seed: int = 0


class LabelingConfig(Contract):
    """Semi-automatic labels for packs whose target was not measured."""

    auto_label_min_confidence: float = Field(
        default=0.95, gt=0.5, le=1, description="a proposed class at least this likely is taken as an auto-label"
    )


# The current value of the target as the features define it (the one definition the labeler, the
# export and the device scorer use): the target's `last` feature, the last grid value in the pack.
CURRENT_VALUE_STAT = "last"


class LabelConfig(Contract):
    """The label a model is trained on. Predictions, evaluation and violation classes are always levels."""

    mode: LabelMode = Field(
        default=LabelMode.LEVEL,
        description="level: the model predicts the label (the target's mean over the label window); change: it "
        "predicts label minus the current value (the target's `last` feature at the pack end) and the scorer "
        "adds that value back, so the gateway still publishes a level; suits slow signals",
    )


class ValidationConfig(Contract):
    """Gates a candidate must pass before registration."""

    reference_share: float = Field(
        default=0.15,
        gt=0,
        lt=0.5,
        description="the reference dataset is the newest whole runs of a line that hold at least this share of its "
        "examples (at least one run; a run is never split between training and reference)",
    )
    holdout_runs: int | None = Field(
        default=None,
        ge=1,
        description="if set, the reference dataset is exactly the newest this many whole runs of each line "
        "(instead of reference_share); the dataset step's --holdout-runs overrides it",
    )
    max_mse_ratio_vs_champion: float = Field(
        default=1.10, ge=1, description="candidate MSE on the reference data may exceed the champion's by this factor"
    )
    min_recall_violation: float = Field(
        default=0.0, ge=0, le=1, description="floor on recall of LSL+USL violations on the reference data"
    )
    min_rmse_gain_vs_persistence: float | None = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="the candidate's reference RMSE must be at least this share below persistence's (predicting the "
        "target's value at the pack end); null relaxes this part of the gate (evaluation.json lists it as relaxed)",
    )
    violation_f1_vs_persistence: bool = Field(
        default=True,
        description="refuse a candidate whose violation F1 on the reference data is below persistence's; false "
        "relaxes this part of the gate (evaluation.json lists it as relaxed)",
    )


class MetricRole(Contract):
    """What a metric key measures, in a unit shared across lines (Mímir's metric taxonomy).

    role value = key value * scale + offset; e.g. a key sent in °F becomes the role in °C with
    scale=5/9, offset=-160/9.
    """

    role: Identifier
    unit: str = Field(min_length=1, max_length=32, description="unit of the role value, e.g. degC")
    source_unit: str = Field(default="", max_length=32, description="unit the key is sent in, if it differs")
    scale: float = Field(default=1.0, allow_inf_nan=False)
    offset: float = Field(default=0.0, allow_inf_nan=False)
    description: str = ""

    @model_validator(mode="after")
    def _invertible(self) -> MetricRole:
        if self.scale == 0:
            raise ValueError(f"scale={self.scale} would map every value of role {self.role!r} to the offset")
        return self


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
    features: FeatureConfig = Field(
        default_factory=FeatureConfig,
        description="features after the <metric>__<stat> ones: windows, EWMs, changes, steps, transport delays",
    )
    model_families: list[ModelFamily] = Field(min_length=1, description="payload formats the devices accept")
    precisions: list[Precision] = Field(min_length=1, description="tiers to export")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    decision: DecisionConfig = Field(
        default_factory=DecisionConfig, description="the violation operating point training tunes (decision.py)"
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="live accuracy, its alarm, retraining triggers, alert notices"
    )
    taxonomy: dict[str, MetricRole] = Field(
        default_factory=dict, description="metric key -> role, unit and conversion, on every line"
    )
    line_taxonomy: dict[Identifier, dict[str, MetricRole]] = Field(
        default_factory=dict,
        description="per line: metric key -> role; replaces the shared key of the same role on that line",
    )
    productive_states: list[str] | None = Field(
        default=None,
        min_length=1,
        description="machine states (values of state context intervals) in which packs are used: a pack whose "
        "window, horizon or label window overlaps another state is left out of training, evaluation and violation "
        "metrics (and counted); a moment without any state interval counts as productive; None (the default): "
        "every state is productive",
    )
    state_rules: list[StateRule] = Field(
        default_factory=list,
        description="the gateway's live machine state, from the use case's metrics: per sample step the first "
        "rule whose conditions all hold names the state (none holds: no state, productive); a window with a step "
        "in a state outside productive_states is not scored. Recordings get their state intervals from the "
        "mapping's context.states rules: write the same conditions here, in metric names",
    )
    live_context: LiveContextConfig | None = Field(
        default=None, description="runs and spec limits the gateway derives from live metrics (live_context.py)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> UseCaseConfig:
        if self.target_metric not in self.metrics:
            raise ValueError(f"target_metric={self.target_metric!r} is not one of metrics {self.metrics}")
        unknown = sorted(set(self.feature_stats) - set(FEATURE_STATS))
        if unknown:
            raise ValueError(f"feature_stats {unknown} are not among {list(FEATURE_STATS)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics repeat a name: {self.metrics}")
        if self.label.mode == LabelMode.CHANGE and CURRENT_VALUE_STAT not in self.feature_stats:
            raise ValueError(
                f"label.mode={self.label.mode.value!r} needs {CURRENT_VALUE_STAT!r} in feature_stats "
                f"{self.feature_stats}: the current value is the target's {CURRENT_VALUE_STAT!r} feature"
            )
        self._check_taxonomy()
        self._check_state_rules()
        if self.live_context is not None:
            self.live_context.check(self.metrics, self.target_metric)
        self.features.check(self.metrics, self._shared_role_keys, self.sample_period_s, self.pack_window_s)
        return self

    def _check_state_rules(self) -> None:
        for number, rule in enumerate(self.state_rules):
            unknown = sorted({metric for metric, _, _ in rule.conditions()} - set(self.metrics))
            if unknown:
                raise ValueError(
                    f"state_rules[{number}] (state {rule.state!r}): metrics {unknown} are not among {self.metrics}"
                )
        if self.state_rules and self.productive_states is None:
            raise ValueError(
                f"state_rules name states {sorted({r.state for r in self.state_rules})} but productive_states is not "
                "set, so every state is productive and the rules would change nothing: set productive_states"
            )

    def _check_taxonomy(self) -> None:
        unknown_keys = sorted(set(self.taxonomy) - self.accepted_metrics)
        if unknown_keys:
            raise ValueError(f"taxonomy keys {unknown_keys} are not among metrics {self.metrics}")
        for line_id in (None, *self.line_taxonomy):
            by_role: dict[str, list[str]] = {}
            for key, role in self.roles_for_line(line_id).items():
                by_role.setdefault(role.role, []).append(key)
            shared = {role: sorted(keys) for role, keys in by_role.items() if len(keys) > 1}
            if shared:
                where = "the shared taxonomy" if line_id is None else f"line {line_id!r}"
                raise ValueError(f"in {where} several keys map to one role: {shared}")

    def roles_for_line(self, line_id: str | None) -> dict[str, MetricRole]:
        """Metric key -> role on one line: the shared taxonomy, with the line's own keys replacing
        the shared key of the same role (a line that sends die temperature under another key)."""
        overrides = self.line_taxonomy.get(line_id, {}) if line_id is not None else {}
        replaced = {role.role for role in overrides.values()}
        shared = {key: role for key, role in self.taxonomy.items() if role.role not in replaced}
        return {**shared, **overrides}

    def key_for_role(self, line_id: str | None, role: str) -> str:
        """The metric key that carries `role` on a line."""
        for key, metric_role in self.roles_for_line(line_id).items():
            if metric_role.role == role:
                return key
        raise KeyError(f"role {role!r} has no metric key on line {line_id!r} in use case {self.use_case!r}")

    def is_productive_state(self, state: str | None) -> bool:
        """Whether packs may be taken in machine state `state` (None: no state interval active: productive)."""
        return state is None or self.productive_states is None or state in self.productive_states

    @property
    def prediction_metric(self) -> str:
        """The metric a gateway publishes its predictions as (event time = the predicted time)."""
        return f"{self.target_metric}__predicted"

    @property
    def current_value_feature(self) -> str:
        """The feature that is the target's current value at the pack end (change-mode labels start from it)."""
        return f"{self.target_metric}__{CURRENT_VALUE_STAT}"

    @property
    def accepted_metrics(self) -> set[str]:
        return {*self.metrics, self.prediction_metric}

    @property
    def _shared_role_keys(self) -> dict[str, str]:
        return {role.role: key for key, role in self.taxonomy.items()}

    @property
    def resolved_features(self) -> FeatureConfig:
        """`features` with metric keys for taxonomy roles (what pack_features computes)."""
        return self.features.resolved(self.metrics, self._shared_role_keys)

    @property
    def feature_names(self) -> list[str]:
        stats = [f"{metric}__{stat}" for metric in self.metrics for stat in self.feature_stats]
        return stats + extra_feature_names(self.resolved_features)

    @classmethod
    def from_file(cls, path: str | Path) -> UseCaseConfig:
        """Load a use case from YAML, or from JSON (what the Lambda asset ships: no PyYAML there)."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.model_validate_json(path.read_text())
        import yaml  # only where configs are authored; not on the Lambda hot path

        return cls.model_validate(yaml.safe_load(path.read_text()))


USE_CASES_DIR = Path(__file__).resolve().parent.parent / "sagemaker_pipelines" / "use_cases"


@cache  # configs are immutable; handlers load theirs on every invocation
def load_use_case(name: str, directory: Path = USE_CASES_DIR) -> UseCaseConfig:
    for suffix in (".json", ".yaml"):
        path = directory / f"{name}{suffix}"
        if path.exists():
            return UseCaseConfig.from_file(path)
    raise FileNotFoundError(f"use case {name!r}: no {name}.json or {name}.yaml in {directory}")


# --- a use case by name (packaged) or by file (anywhere): one resolution for the CLI, the functions and the steps


class UseCaseError(ValueError):
    """No use case, or one that cannot be loaded: the message names the option or variable, the file and the field."""


def packaged_use_cases(directory: Path = USE_CASES_DIR) -> list[str]:
    return sorted({p.stem for p in directory.glob("*.yaml")} | {p.stem for p in directory.glob("*.json")})


def load_use_case_file(path: str | Path, source: str = "use case file") -> UseCaseConfig:
    """A use case from a YAML (or JSON: `.json`) file anywhere; cached per path and modification.

    A missing, unreadable or invalid file raises UseCaseError naming `source` (the option or variable
    that gave the path), the file and every refused field."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise UseCaseError(f"{source}={str(path)!r}: {reason} ({resolved})") from None
    if not resolved.is_file():
        raise UseCaseError(f"{source}={str(path)!r}: {resolved} is not a file")
    return _load_file(str(resolved), stat.st_mtime_ns, stat.st_size, source)


@lru_cache(maxsize=32)
def _load_file(path: str, _mtime_ns: int, _size: int, source: str) -> UseCaseConfig:
    where = f"{source}={path!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UseCaseError(f"{where}: cannot be read: {exc}") from None
    try:
        if path.endswith(".json"):
            return UseCaseConfig.model_validate_json(text)
        import yaml  # only where configs are authored; the Lambda asset and the step archive carry JSON

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UseCaseError(f"{where}: not valid YAML: {exc}") from None
        if not isinstance(document, dict):
            raise UseCaseError(
                f"{where}: the document is {type(document).__name__}, not a mapping of use-case fields "
                "(use_case, metrics, target_metric, ...)"
            )
        return UseCaseConfig.model_validate(document)
    except ValidationError as exc:
        raise UseCaseError(f"{where}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    """Each refused field as `field=value: reason` (`field is missing`); a check across fields by its
    own message, which names them."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).replace("Value error, ", "", 1)
        name = ".".join(str(part) for part in error["loc"])
        if not name:
            problems.append(message)
        elif error["type"] == "missing":
            problems.append(f"{name} is missing")
        else:
            problems.append(f"{name}={repr(error.get('input'))[:120]}: {message}")
    return "; ".join(problems)


def resolve_use_case(
    name: str | None = None,
    file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    name_source: str = "--use-case",
    file_source: str = "--use-case-file",
) -> UseCaseConfig:
    """THE way edgeloop finds its use case (CLI, functions' settings, pipeline steps, stack).

    A file (any path) or a packaged name; with neither, the environment's USE_CASE_FILE_ENV or
    USE_CASE_ENV (`environ`, default os.environ). Both a name and a file: the file's `use_case` must
    be that name. Nothing at all is an error: there is no default use case."""
    name, file = name or None, file or None
    if name is None and file is None:
        environ = os.environ if environ is None else environ
        name, file = environ.get(names.USE_CASE_ENV) or None, environ.get(names.USE_CASE_FILE_ENV) or None
        name_source, file_source = names.USE_CASE_ENV, names.USE_CASE_FILE_ENV
        if name is None and file is None:
            raise UseCaseError(
                f"no use case: give --use-case NAME (packaged: {', '.join(packaged_use_cases())}) or "
                f"--use-case-file PATH, or set {names.USE_CASE_ENV} or {names.USE_CASE_FILE_ENV}"
            )
    if file is not None:
        config = load_use_case_file(file, file_source)
        if name is not None and name != config.use_case:
            raise UseCaseError(
                f"{name_source}={name!r} but {file_source}={str(file)!r} is use_case={config.use_case!r}: "
                "give one, or make them agree"
            )
        return config
    assert name is not None
    if not IDENTIFIER.match(name):
        raise UseCaseError(f"{name_source}={name!r} is not a use-case name ({IDENTIFIER.pattern})")
    try:
        return load_use_case(name)
    except FileNotFoundError:
        raise UseCaseError(
            f"{name_source}={name!r} is not a packaged use case ({', '.join(packaged_use_cases())}); "
            f"for a use case elsewhere give {file_source} PATH"
        ) from None
